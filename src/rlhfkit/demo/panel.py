"""The demo's simulated annotator panel: the support-replies rubric applied by code.

After AlpacaFarm's simulated annotators (Dubois et al. 2023, §3.2): a pool of annotators that
share one notion of quality but each have their own failings, so that the agreement
statistics, the calibration gate and the drift alerts have something real to measure. Here the
shared notion is the bundled rubric (``templates/support_replies.toml``: helpful, tone,
concise) scored by code, and each annotator adds label-flip noise, position bias and length
bias; one drifts.

Everything in this module is a *simulation* and says so: annotator names start with ``sim-``.
A real team replaces the panel with people in the annotation app; nothing else changes,
because the panel labels through the same HTTP API the app's pages use
(`rlhfkit.pipeline.simulated.run_panel`).

`rubric_scores` is tuned to the support-replies task (its issues, actions and sign-off); it is
not a general-purpose judge. Helpfulness dominates the overall score on purpose: a DPO run
whose preferences only rewarded "short" and "no hedging" taught SmolLM2 ten-word replies that
echoed the customer's email. Such echoes must lose to a longer reply that acts.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rlhfkit.templates.support_replies import ITEMS

Choice = Literal["first", "second", "tie", "both_bad"]
Preference = Literal["a", "b", "tie", "both_bad"]

# Overall score = a weighted sum of the criteria. Helpfulness carries the most weight, and
# whether a reply acts on the problem at all (0.9 of it) outweighs brevity and politeness in
# all but extreme cases; its details (a date, the order number: 0.05 each) weigh less than a
# missing sign-off or a hedge, the habits this team wants to change.
WEIGHTS = {"helpful": 0.5, "tone": 0.3, "concise": 0.2}
BOTH_BAD_BELOW = 0.3
"""When neither reply reaches this helpfulness, the rubric's answer is 'both bad'."""
MAX_WORDS = 60

# --- what the rubric looks for --------------------------------------------------------------

# A concrete next step is a commitment in the first person, done or promised: "I have sent",
# "I sent", "we will refund", "I'm arranging", or a done deed in the passive ("has been
# refunded"). Offers, habits and hedges ("we can refund", "we send them out", "I might
# send", "I cannot refund") do not match: only these tenses are accepted.
_VERBS = {  # base form: (past, -ing)
    "send": ("sent", "sending"),
    "refund": ("refunded", "refunding"),
    "issue": ("issued", "issuing"),
    "cancel": ("cancell?ed", "cancell?ing"),
    "apply": ("applied", "applying"),
    "add": ("added", "adding"),
    "update": ("updated", "updating"),
    "change": ("changed", "changing"),
    "arrange": ("arranged", "arranging"),
    "replace": ("replaced", "replacing"),
    "ship": ("shipped", "shipping"),
    "dispatch": ("dispatched", "dispatching"),
    "email": ("emailed", "emailing"),
    "check": ("checked", "checking"),
    "book": ("booked", "booking"),
    "process": ("processed", "processing"),
    "credit": ("credited", "crediting"),
    "reserve": ("reserved", "reserving"),
    "order": ("ordered", "ordering"),
    "post": ("posted", "posting"),
    "attach": ("attached", "attaching"),
    "waive": ("waived", "waiving"),
}
_BASE = "|".join(_VERBS)
_PAST = "|".join(p for p, _ in _VERBS.values())
_ING = "|".join(g for _, g in _VERBS.values())
_ADV = r"(?: (?:just|already|now|also|personally|gone ahead and))?"
_COMMIT = re.compile(
    rf"\b(?:i|we)(?:(?:'ve| have){_ADV} (?:{_PAST})|(?:'ll| will){_ADV} (?:{_BASE})"
    rf"|(?:'m| am|'re| are){_ADV} (?:{_ING})|{_ADV} (?:{_PAST}))\b",
    re.IGNORECASE,
)
_PASSIVE = re.compile(rf"\b(?:has|have) (?:now |already |just )?been (?:{_PAST})\b", re.I)
_DONE = re.compile(r"^\s*done\b|\bis due (?:back|in)\b|\bwill (?:arrive|reach|show)\b", re.I | re.M)
_TIMEFRAME = re.compile(
    r"\b(?:today|tomorrow|tonight|this (?:morning|afternoon|week)|next week|shortly|"
    r"the same day|the moment|within (?:\w+ ){1,3}(?:days?|hours?|weeks?)|"
    r"in (?:\w+ ){1,3}(?:days?|hours?)|by (?:monday|tuesday|wednesday|thursday|friday|"
    r"saturday|sunday))\b",
    re.IGNORECASE,
)
_DEFLECT = re.compile(
    r"\b(?:as an ai|cannot access|can't access|can not access|do not have access|"
    r"don't have access|unable to|contact (?:our |the )?(?:customer )?(?:service|support)|"
    r"reach out to (?:our |the )?(?:customer )?(?:service|support))\b",
    re.IGNORECASE,
)
# Topic of the email (the support-replies issues) -> words an on-topic action uses.
_TOPICS: tuple[tuple[str, re.Pattern, re.Pattern], ...] = tuple(
    (name, re.compile(email, re.I), re.compile(action, re.I))
    for name, email, action in (
        ("double charge", r"charged twice|two payments|extra payment", r"refund|duplicate"),
        ("cancel order", r"\bcancel", r"cancel"),
        ("refund request", r"money back|refund|returned|sent back", r"refund|issued|credited"),
        ("wrong item", r"wrong|something completely different", r"correct|return label|sent"),
        ("change address", r"address|moved", r"address|update|changed"),
        ("missing part", r"missing|without the|incomplete", r"missing|parts|screws|sent"),
        ("discount code", r"discount|code", r"appl|discount|difference"),
        ("stock question", r"stock|sold out|coming back", r"restock|due back|added you|notify"),
        ("damaged item", r"broken|damaged|crushed", r"replac|refund|sen[dt]"),
        ("late delivery", r"arrived|hasn't|late|supposed to be", r"track|courier|arriv|replac"),
    )
)
_HEDGES = re.compile(
    r"(?<!\w)(?:i think|maybe|perhaps|possibly|might|i'm not sure|i am not sure|not (?:\w+ )?sure|"
    r"i believe|as an ai|hopefully|probably|i guess|it seems|could be)(?!\w)",
    re.IGNORECASE,
)
_FLATTERY = re.compile(
    r"(?<!\w)(?:great question|what a great|wonderful|valued customer|truly appreciate|amazing|"
    r"fantastic|excellent question|you're awesome|such a lovely|brilliant|delighted to hear)(?!\w)",
    re.IGNORECASE,
)
# The same sign-off the project's `signs_off` success criterion detects.
_SIGN_OFF = re.compile(
    r"(regards|sincerely|best wishes|thank you|thanks),?\s*(\n[^\n]{0,60})?\s*$", re.IGNORECASE
)
_FILLER = re.compile(
    r"(?<!\w)(?:thank you for (?:your email|reaching out|contacting us|your patience)|"
    r"i hope this (?:email|message) finds you well|we value your feedback|"
    r"please (?:don't|do not) hesitate|feel free to|i understand (?:how frustrating|your "
    r"frustration)|we apologi[sz]e for any inconvenience|i apologi[sz]e for any inconvenience|"
    r"rest assured|as mentioned)(?!\w)",
    re.IGNORECASE,
)
_ORDER = re.compile(r"#\d{4,}")
_WORD = re.compile(r"[a-z0-9#']+")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the i you we my your our it is was to of and or for in on at be by with this "
        "that have has had me us so but not no do did can will would please hi hello there",
    )
)


def email_text(prompt: str | Sequence[dict[str, str]]) -> str:
    """The customer's email: the prompt itself, or the last user turn of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else "\n".join(m["content"] for m in prompt)


def _topic(email: str) -> tuple[str, re.Pattern] | None:
    for name, email_re, action_re in _TOPICS:
        if email_re.search(email):
            return name, action_re
    return None


def _copied_share(email: str, response: str) -> float:
    """Share of the response's content words that also occur in the email (echo measure)."""
    email_words = set(_WORD.findall(email.lower()))
    words = [w for w in _WORD.findall(response.lower()) if w not in _STOP]
    if not words:
        return 1.0
    return sum(w in email_words for w in words) / len(words)


def _helpful(email: str, response: str) -> tuple[float, list[str]]:
    """0..1: does the reply act on the customer's problem? Returns the score and its reasons."""
    body = _SIGN_OFF.sub("", response.replace("’", "'"))
    acts = bool(_COMMIT.search(body) or _PASSIVE.search(body) or _DONE.search(body))
    when = bool(_TIMEFRAME.search(body))
    order = set(_ORDER.findall(email)) & set(_ORDER.findall(body))
    item = any(i in email.lower() and i in body.lower() for i in ITEMS)
    reasons = []
    if acts:
        score = 0.7
        topic = _topic(email)
        if topic is None or topic[1].search(body):
            score += 0.2
            reasons.append("takes a concrete step on the customer's problem")
        else:
            reasons.append(f"acts, but not on the {topic[0]} the email is about")
        score += 0.05 * when + 0.05 * bool(order or item)
        if when:
            reasons.append("says when")
    else:
        # A date or a detail without any commitment is worth little; restating the email
        # or apologising is worth nothing.
        score = 0.15 * when + 0.05 * bool(order or item)
        reasons.append("no concrete next step")
        if _copied_share(email, body) >= 0.6:
            score = min(score, 0.05)
            reasons.append("mostly repeats the email")
    if _DEFLECT.search(body):
        score -= 0.4
        reasons.append("deflects instead of helping")
    return max(0.0, min(1.0, score)), reasons


def _tone(response: str) -> tuple[float, list[str]]:
    response = response.replace("’", "'")
    hedges = {m.group(0).lower() for m in _HEDGES.finditer(response)}
    flattery = {m.group(0).lower() for m in _FLATTERY.finditer(response)}
    signs_off = bool(_SIGN_OFF.search(response.strip()))
    score = 1.0 - min(0.5, 0.25 * len(hedges)) - min(0.3, 0.15 * len(flattery))
    score -= 0.0 if signs_off else 0.35
    reasons = []
    if hedges:
        reasons.append("hedges (" + ", ".join(sorted(hedges)) + ")")
    if flattery:
        reasons.append("flatters (" + ", ".join(sorted(flattery)) + ")")
    if not signs_off:
        reasons.append("no sign-off")
    return max(0.0, score), reasons


def _concise(response: str) -> tuple[float, list[str]]:
    words = len(response.split())
    fillers = {m.group(0).lower() for m in _FILLER.finditer(response)}
    score = 1.0 if words <= MAX_WORDS else max(0.0, 1.0 - (words - MAX_WORDS) / MAX_WORDS)
    score -= min(0.45, 0.15 * len(fillers))
    reasons = [f"{words} words"] + [f"filler ('{f}')" for f in sorted(fillers)]
    return max(0.0, score), reasons


def rubric_scores(prompt: str | Sequence[dict[str, str]], response: str) -> dict[str, float]:
    """The rubric's criteria scored by code, each 0..1, plus ``overall`` (the weighted sum).

    helpful: a first-person commitment or done deed ("I have refunded", "has been sent"), on
    the email's topic, with a time frame and the order or item; restating or apologising
    scores ~0, deflecting ("as an AI I cannot...") is penalised. tone: no hedging, no
    flattery, a sign-off line. concise: at most 60 words, no filler phrases.
    """
    return _scored(prompt, response)[0]


def _scored(prompt, response: str) -> tuple[dict[str, float], dict[str, list[str]]]:
    email = email_text(prompt)
    parts = {
        "helpful": _helpful(email, response),
        "tone": _tone(response),
        "concise": _concise(response),
    }
    scores = {k: round(v[0], 4) for k, v in parts.items()}
    scores["overall"] = round(sum(WEIGHTS[k] * scores[k] for k in WEIGHTS), 4)
    return scores, {k: v[1] for k, v in parts.items()}


def rubric_judge(
    prompt: str | Sequence[dict[str, str]],
    response_a: str,
    response_b: str,
    *,
    allow_both_bad: bool = True,
) -> tuple[Preference, str]:
    """The panel's noise-free verdict on a pair, with a one-line rationale.

    'both_bad' when neither reply is helpful (the rubric's both-bad policy), 'tie' only when
    the two score exactly the same (identical replies), else the higher overall score. The
    same call with the replies swapped gives the mirrored answer: there is no position bias.
    """
    sa, ra = _scored(prompt, response_a)
    sb, rb = _scored(prompt, response_b)
    if allow_both_bad and max(sa["helpful"], sb["helpful"]) < BOTH_BAD_BELOW:
        helpful = f"helpful {sa['helpful']:.2f} vs {sb['helpful']:.2f}"
        return "both_bad", f"neither reply helps ({helpful})"
    diff = sa["overall"] - sb["overall"]
    if abs(diff) < 1e-9:
        return "tie", f"both score {sa['overall']:.2f}"
    win, (sw, rw), (sl, _) = ("a", (sa, ra), (sb, rb)) if diff > 0 else ("b", (sb, rb), (sa, ra))
    deciding = max(WEIGHTS, key=lambda k: WEIGHTS[k] * (sw[k] - sl[k]))
    why = "; ".join(rw[deciding]) or deciding
    return win, (
        f"{win.upper()} scores {sw['overall']:.2f} vs {sl['overall']:.2f}; "
        f"decided by {deciding}: {why}"
    )


# --- the annotators ---------------------------------------------------------------------------


@dataclass
class SimulatedAnnotator:
    """One simulated annotator: the rubric's verdict, plus this annotator's failings.

    Each label: with probability ``position_bias`` the annotator does not read and picks the
    reply shown first (a lapse); otherwise it applies the rubric, with the length difference
    weighted by ``length_bias`` added to its score difference (it prefers longer replies), and
    then with probability `noise` (growing to ``drift_noise`` after ``drift_after`` labels)
    flips its answer. Seeded: the same annotator and inputs give the same labels.
    """

    name: str
    noise: float = 0.05
    """Probability of flipping the answer (first <-> second; 'both bad' becomes a random side)."""
    position_bias: float = 0.0
    """Probability of picking the first-shown reply without weighing the two."""
    length_bias: float = 0.0
    """Weight on tanh(word-count difference / 40) added to the score difference (0: none)."""
    drift_after: int | None = None
    """After this many labels the noise starts growing (None: never drifts)."""
    drift_noise: float = 0.45
    """The noise this annotator drifts to."""
    drift_span: int = 20
    """Labels over which the noise rises linearly from `noise` to `drift_noise`."""
    tie_margin: float = 0.04
    """Where the rubric allows ties: a score difference under this is a tie (the annotator
    cannot tell the replies apart: a date or an order number more or less)."""
    seed: int = 0
    labelled: int = 0
    """Labels given so far (drives the drift)."""
    _rng: random.Random = field(init=False, repr=False)
    _criteria_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for what in ("noise", "position_bias", "drift_noise"):
            if not 0.0 <= getattr(self, what) <= 1.0:
                raise ValueError(f"{self.name}: {what} must be within [0, 1]")
        self._rng = random.Random(f"{self.name}:{self.seed}")
        # a stream of its own: answering per criterion leaves the overall labels unchanged
        self._criteria_rng = random.Random(f"{self.name}:{self.seed}:criteria")

    def describe(self) -> dict:
        """Who this annotator is, for the run's panel.json (and the report)."""
        return {
            "name": self.name,
            "noise": self.noise,
            "position_bias": self.position_bias,
            "length_bias": self.length_bias,
            "drift_after": self.drift_after,
            "drift_noise": self.drift_noise if self.drift_after is not None else None,
        }

    def current_noise(self) -> float:
        if self.drift_after is None or self.labelled < self.drift_after:
            return self.noise
        ramp = min(1.0, (self.labelled - self.drift_after + 1) / max(self.drift_span, 1))
        return self.noise + ramp * (self.drift_noise - self.noise)

    def label(
        self,
        prompt: str | Sequence[dict[str, str]],
        first: str,
        second: str,
        *,
        allow_tie: bool = False,
        allow_both_bad: bool = True,
        scores: tuple[dict[str, float], dict[str, float]] | None = None,
    ) -> Choice:
        """Label one pair as shown: 'first', 'second', or ('tie' / 'both_bad' where the
        rubric's policies allow them). `scores`: the two replies' `rubric_scores`, when the
        caller has them already."""
        rng, noise = self._rng, self.current_noise()
        self.labelled += 1
        if rng.random() < self.position_bias:
            return "first"
        s1, s2 = scores or (rubric_scores(prompt, first), rubric_scores(prompt, second))
        if allow_both_bad and max(s1["helpful"], s2["helpful"]) < BOTH_BAD_BELOW:
            choice: Choice = "both_bad"
        else:
            w1, w2 = len(first.split()), len(second.split())
            diff = s1["overall"] - s2["overall"] + self.length_bias * math.tanh((w1 - w2) / 40)
            if allow_tie and abs(diff) < self.tie_margin:
                choice = "tie"
            elif diff == 0:
                choice = rng.choice(("first", "second"))
            else:
                choice = "first" if diff > 0 else "second"
        if rng.random() < noise:
            choice = {"first": "second", "second": "first"}.get(choice) or rng.choice(
                ("first", "second")
            )
        return choice

    def criteria(
        self,
        prompt: str | Sequence[dict[str, str]],
        first: str,
        second: str,
        *,
        scores: tuple[dict[str, float], dict[str, float]] | None = None,
    ) -> dict[str, str]:
        """The optional per-criterion answers (first, second or tie for each of helpful,
        tone and concise), with the same noise as the overall label: which reply helps more,
        which has the better tone, which is more concise, each judged on its own."""
        s1, s2 = scores or (rubric_scores(prompt, first), rubric_scores(prompt, second))
        rng, noise, answers = self._criteria_rng, self.current_noise(), {}
        for name in WEIGHTS:
            diff = s1[name] - s2[name]
            answer = "tie" if abs(diff) < 1e-9 else ("first" if diff > 0 else "second")
            if answer != "tie" and rng.random() < noise:
                answer = "second" if answer == "first" else "first"
            answers[name] = answer
        return answers


# Archetypes of the default panel, in the order `default_panel` hands them out.
# The steady ones stay above ~0.9 anchor accuracy, so that a window of 20 anchor labels
# rarely dips under the usual 0.7 threshold by chance; the drifter ends near a coin flip.
_ARCHETYPES = (
    ("sim-careful", {"noise": 0.03}),
    ("sim-hasty", {"noise": 0.08, "position_bias": 0.04}),
    ("sim-verbose", {"noise": 0.04, "length_bias": 0.25}),
    ("sim-first-picker", {"noise": 0.03, "position_bias": 0.12}),
)
DRIFTER = ("sim-drifter", {"noise": 0.04, "drift_noise": 0.5})


def default_panel(k: int = 5, seed: int = 0, drift_after: int = 60) -> list[SimulatedAnnotator]:
    """k simulated annotators: careful, hasty, length-biased, position-biased, and (for k >= 2)
    one that drifts after `drift_after` labels. More than five repeats the archetypes with a
    numeric suffix (``sim-careful-2``)."""
    if k < 1:
        raise ValueError("a panel needs at least one annotator")
    steady = k - 1 if k >= 2 else k
    panel = []
    for i in range(steady):
        name, kw = _ARCHETYPES[i % len(_ARCHETYPES)]
        suffix = f"-{i // len(_ARCHETYPES) + 1}" if i >= len(_ARCHETYPES) else ""
        panel.append(SimulatedAnnotator(name + suffix, seed=seed, **kw))
    if k >= 2:
        name, kw = DRIFTER
        panel.append(SimulatedAnnotator(name, seed=seed, **{**kw, "drift_after": drift_after}))
    return panel
