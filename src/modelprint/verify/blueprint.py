"""Blueprint of a verifier plug-in: how a scheme's answers are scored and turned into a decision.

The verifier contract lives in :mod:`modelprint.verify.verifiers` (``VerifyRequest``, ``Outcome``,
``ask_in_batches``, the ``VERIFIERS`` registry); this page says how to fill it in::

    from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest, ask_in_batches

    @VERIFIERS.register("my-test", source="Author et al., 'Paper' (2025)")
    def my_verifier(req: VerifyRequest) -> Outcome:
        matched = []

        def score(indices, answers):   # one batch of the planned keys and the backend's answers
            ...                        # compare; append matching key indices to ``matched``

        asked = ask_in_batches(req, score)        # batching, progress bar, sequential early stop
        return Outcome(asked, sorted(matched), log10_p=..., verdict="match" or "no match",
                       rule="the decision rule in words")

A verifier takes one :class:`~modelprint.verify.verifiers.VerifyRequest` (backend, set, planned key order,
alpha, match mode, batch size, system prompt) and returns an :class:`~modelprint.verify.verifiers.Outcome`
naming keys by index only (never a key or a response). ``log10_p`` is the false-positive bound when the
verifier has one (the decision is then p ≤ α), else ``None`` with the rule stated in ``rule``. A strategy
names its verifier (``Strategy.verifier``) and generate writes it into the set's header, so verify finds it
from the set alone.
"""
