"""verify: ask a suspect model the secret keys and decide, with a false-positive bound, whether it is ours."""
from modelprint.verify.backends import Answer, Backend, LocalBackend, answer_matches
from modelprint.verify.core import MATCH_MODES, VerifyRecord, as_fingerprint_set, check_options, plan_keys, verify
from modelprint.verify.family import SetSource, load_set, verify_sets
from modelprint.verify.http import HttpBackend
from modelprint.verify.local import answer_keys, first_token_probs, retention
from modelprint.verify.stats import log10_tail, log_tail, sequential_decision, tail

__all__ = ["Answer", "Backend", "LocalBackend", "answer_matches", "VerifyRecord", "plan_keys", "verify",
           "MATCH_MODES", "as_fingerprint_set", "check_options", "answer_keys", "first_token_probs", "retention",
           "verify_sets", "load_set", "SetSource", "HttpBackend",
           "log10_tail", "log_tail", "sequential_decision", "tail"]
