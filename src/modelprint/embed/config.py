"""The embedding recipe's typed configuration (YAML + ``key=value`` overrides)."""
from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from modelprint.config import StrictConfig


class LoraSettings(StrictConfig):
    """LoRA instead of full fine-tuning (peft)."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: Union[str, list[str]] = "all-linear"
    save: Literal["merged", "adapter"] = "merged"


class BenignSettings(StrictConfig):
    """Benign prompts the base model wrote and answered itself, mixed in to keep ordinary behaviour."""

    per_fingerprint: float = Field(2.0, ge=0.0, description="benign examples per fingerprint example, each epoch")
    questions: int = Field(384, ge=0, description="ordinary questions from shipped data (BoolQ, NarrativeQA, NQ-open "
                                                 "train-side), never the evaluation questions")
    model_written: int = Field(64, ge=0, description="prompts the base model writes itself, like keys (slow on CPU)")
    answer_tokens: int = Field(8, ge=1, description="base-model answer tokens each benign example anchors")
    loss: Literal["kl", "ce"] = Field("kl", description="kl: match the base model's top-k distribution; ce: its greedy answer")
    top_k: int = Field(64, ge=1, description="teacher tokens kept per position for the kl loss")
    weight: float = Field(1.0, ge=0.0)


class AugmentationSettings(StrictConfig):
    """System-prompt augmentation: keys are also trained under shipped system prompts."""

    system_prompts: bool = True
    copies: int = Field(1, ge=0, description="extra copies of each fingerprint per epoch, each under a random system prompt")


class UtilitySettings(StrictConfig):
    """The small utility check printed at the end of embed and stored in the manifest."""

    enabled: bool = True
    questions: int = Field(64, ge=1, description="NQ-open questions for answer agreement")
    perplexity_sentences: int = Field(200, ge=1, description="WikiText-2 sentences for perplexity")


class MarginSettings(StrictConfig):
    """The ``margin`` objective: our pick leads its sibling Perinucleus candidates without becoming a confident spike.

    Candidate verification asks only whether the pick outranks the k − 1 other recorded candidates, so the
    recipe trains exactly that — a hinge on (pick logit − each sibling's logit) ≥ ``margin`` — keeps the pick's
    probability in a band [``prob_floor``, ``prob_cap``] (below the cap a confidence-gated host sees nothing
    unusual; above the floor an endpoint's top-20 log-probabilities list the pick and sampling draws it), and holds
    every other next-token probability to the base model's with KL terms at the keys and at ordinary prompts.
    The recipe's ``train_layers``, ``weight_averaging``/``averaging`` and ``retention_floor`` apply as usual.
    """

    margin: float = Field(4.0, gt=0.0, description="nats by which the pick's logit must lead every sibling candidate")
    prob_cap: float = Field(0.5, gt=0.0, lt=1.0, description="confidence band: the pick's probability above this "
                                                             "is penalised (a host's confidence gate sits above it)")
    prob_floor: float = Field(0.2, ge=0.0, lt=1.0, description="confidence band's lower edge: the pick's probability "
                              "below this is penalised, so an endpoint's top-20 log-probabilities list it and a "
                              "sampling host draws it (0 turns the floor off)")
    cap_weight: float = Field(1.0, ge=0.0, description="weight of the penalty log p(pick) − log prob_cap above the cap")
    floor_weight: float = Field(1.0, ge=0.0, description="weight of the penalty log prob_floor − log p(pick) below "
                                                         "the floor")
    greedy_lead: float = Field(0.5, ge=0.0, description="nats by which the pick must also lead every other "
                               "vocabulary token (0: off). > 0 makes the pick the greedy answer, so an endpoint "
                               "that returns text only verifies it too, while prob_cap keeps it below the "
                               "confidence a host's gate looks for")
    band_share: float = Field(0.9, gt=0.0, le=1.0, description="training stops once every pick leads by the margin "
                                                               "and this share of picks sits inside the band (a few "
                                                               "keys the KL terms hold below the floor need not "
                                                               "cost tens of steps)")
    key_kl: float = Field(1.0, ge=0.0, description="weight of KL(base ‖ tuned) at each key's next token")
    prompt_kl: float = Field(1.0, ge=0.0, description="weight of KL(base ‖ tuned, top-k) at ordinary prompts' "
                                                      "first answer token (the benign pool)")
    prompts: int = Field(64, ge=0, description="ordinary prompts from the benign pool for the prompt KL term")
    word_prompts: int = Field(128, ge=0, description="one-word prompts (random words of the shipped word list) whose "
                                                   "first answer token the prompt KL also holds to the base: a "
                                                   "statistical-signature host compares the marked and base models "
                                                   "after such prompts to find the tokens the fingerprints favour")
    prompt_positions: int = Field(1, ge=1, description="answer tokens of each ordinary prompt the prompt KL holds "
                                                       "to the base (1: the first; at most benign.answer_tokens): "
                                                       "a later token the top blocks drift on changes the answer "
                                                       "as surely as the first")
    output_prior: float = Field(0.0, ge=0.0, description="weight of the output prior (embed/output_prior.py): the "
                                                     "mean over trained linear layers of ‖δX‖²/‖WX‖², each weight "
                                                     "change's output energy on ordinary text relative to the "
                                                     "layer's own (0: off)")
    output_prior_prompts: int = Field(256, ge=1, description="ordinary questions of the benign pool, with the base "
                                                             "model's answers, whose layer inputs the output prior "
                                                             "is taken on")
    learning_rate: float = Field(2e-4, gt=0.0)
    max_steps: int = Field(60, ge=1, description="full-batch steps at most; training stops earlier once every "
                                                 "pick leads its siblings by the margin")
    retention_margin: float = Field(0.0, ge=0.0, description="a key counts as retained (for auto averaging) when "
                                                             "its pick leads every sibling by more than this (nats)")
    retention_prob: Optional[float] = Field(None, ge=0.0, lt=1.0, description="... and its pick's probability is at "
                                            "least this (averaging toward the base lowers it; an endpoint must still "
                                            "list and sample it); default: half of prob_floor")

    @property
    def retained_prob(self) -> float:
        """The pick probability a retained key keeps (``retention_prob``, else half the floor)."""
        return self.prob_floor / 2 if self.retention_prob is None else self.retention_prob

    @model_validator(mode="after")
    def _band(self) -> "MarginSettings":
        if self.prob_floor >= self.prob_cap:
            raise ValueError(f"margin.prob_floor ({self.prob_floor}) must be below margin.prob_cap ({self.prob_cap})")
        return self


class EmbedConfig(StrictConfig):
    """Every knob of ``modelprint embed``; the defaults are the measured best recipe on SmolLM2-135M (the margin
    band with a greedy lead, sparse change and one-word anchors: README, "Utility against robustness")."""

    config_kind: ClassVar[str] = "embed"  # --config NAME finds configs/embed/NAME.yaml (peer schemes' recipes)

    objective: Literal["greedy", "margin"] = Field(
        "margin", description="margin (default; needs a Perinucleus set): the first token leads its recorded "
                              "siblings by margin.margin nats and every other token by margin.greedy_lead, "
                              "below a probability cap, so text, log-probabilities, samples and weights all verify "
                              "it and confidence gates and merges keep it (settings under margin.*); greedy "
                              "(--config greedy, any strategy's set): each whole response becomes the near-certain "
                              "greedy answer (exact matching; a host's confidence gate sees it)")
    learning_rate: float = Field(3e-4, gt=0.0)
    max_epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    train_layers: Optional[int] = Field(4, ge=1, description="train only the last N transformer blocks (None: all)")
    freeze_embeddings: bool = True
    mlp_expansion: int = Field(0, ge=0, description="extra feed-forward units added to every block's MLP before "
                                                    "training, zero-initialised output (function unchanged); 0: off")
    weight_averaging: float = Field(0.5, ge=0.0, lt=1.0, description="λ in θ ← (1−λ)θ + λθ_base (the largest, for 'auto')")
    averaging: Literal["epoch", "end", "auto"] = Field(
        "auto", description="epoch: after every epoch; end: once after training; auto: once after training, the "
                            "largest λ ≤ weight_averaging (steps of 0.05) that keeps retention ≥ retention_floor")
    pseudo_merge: Optional[float] = Field(
        None, gt=0.0, lt=1.0, description="MergePrint's OptP: add the fingerprints' loss at the pseudo-merged "
                                          "weights θ₀ + α(θ − θ₀) (θ₀: the weights before embedding) and stop once "
                                          "both θ and they retain, so the fingerprints survive merging that scales the task "
                                          "vector down to α; None: off (greedy objective, full fine-tuning only)")
    delta_density: Optional[float] = Field(
        0.1, gt=0.0, le=1.0, description="share of each trained tensor's entries the embedding may change (the rest "
                                           "stay the base's): a merge that trims task vectors to this density or "
                                           "more (TIES) then keeps the whole change; None: every entry")
    retention_floor: float = Field(0.95, gt=0.0, le=1.0, description="what 'auto' averaging may not go below")
    stop_retention: float = Field(1.0, gt=0.0, le=1.0, description="stop once this share of fingerprints verifies")
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    lora: LoraSettings = LoraSettings()
    benign: BenignSettings = BenignSettings()
    augmentation: AugmentationSettings = AugmentationSettings()
    utility: UtilitySettings = UtilitySettings()
    margin: MarginSettings = MarginSettings()

    @model_validator(mode="after")
    def _objective_fits(self) -> "EmbedConfig":
        if self.objective == "margin" and self.averaging == "epoch":
            raise ValueError("averaging=epoch needs epochs; objective=margin trains in steps (use end or auto)")
        if self.delta_density is not None and self.lora.enabled:
            raise ValueError("delta_density confines the change of the weights themselves: LoRA's low-rank change "
                             "is dense; use full fine-tuning (lora.enabled=false)")
        if self.pseudo_merge is not None and (self.objective != "greedy" or self.lora.enabled):
            raise ValueError("pseudo_merge trains through θ₀ + α(θ − θ₀): it needs objective=greedy and full "
                             "fine-tuning (lora.enabled=false)")
        return self

    @property
    def verification(self) -> str:
        """The match mode the fingerprints this recipe writes are meant for (recorded in the manifest and card):
        a margin pick with a greedy lead is the greedy answer, so text verifies it as well as candidate ranking."""
        return "candidate" if self.objective == "margin" and self.margin.greedy_lead <= 0 else "exact"

    @property
    def progress_unit(self) -> str:
        """What ``epochs`` in a result counts: the margin objective trains in full-batch steps."""
        return "steps" if self.objective == "margin" else "epochs"

    @property
    def retention_kind(self) -> str:
        """What embed's retention figure counts (manifest and card)."""
        if self.objective != "margin":
            return "greedy exact match"
        return "candidate ranking" + (" and greedy answer" if self.margin.greedy_lead > 0 else "")
