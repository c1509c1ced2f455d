"""The small utility check of embed: perplexity on held-out English and answer agreement with the base."""
from __future__ import annotations

from typing import Any

from modelprint.embed.config import UtilitySettings
from modelprint.evaluation import AgreementReference, answer_agreement, reference_answers, run_tasks
from modelprint.models import LoadedModel


def measure_base(base: LoadedModel, settings: UtilitySettings) -> tuple[AgreementReference, dict[str, Any]]:
    reference = reference_answers(base, n=settings.questions, progress=False)
    ppl = run_tasks(base, ["perplexity"], n=settings.perplexity_sentences, progress=False)["perplexity"]
    return reference, {"perplexity": ppl.score, "perplexity_ci": list(ppl.ci), "answer_agreement": 1.0}


def measure_tuned(model: LoadedModel, reference: AgreementReference, settings: UtilitySettings) -> dict[str, Any]:
    agree = answer_agreement(model, reference, progress=False)
    ppl = run_tasks(model, ["perplexity"], n=settings.perplexity_sentences, progress=False)["perplexity"]
    return {"perplexity": ppl.score, "perplexity_ci": list(ppl.ci), "answer_agreement": agree.score,
            "answer_agreement_ci": list(agree.ci), "prefix_agreement": agree.extras.get("prefix_agreement")}
