"""The memo-format template: internal memos in a firm's house format.

The format: four header lines (To, From, Subject, Date), a blank line, a one-line summary
(``Summary: ...``), then the body; the whole memo at most 80 words. Everything is written by
code from templates (no downloads). The SFT rows are the firm's archive: every memo says what
it should, but only some are in the house format; the rest are loose emails, some padded
(`archive`). SFT makes the format *appear*; the preference stages strengthen it. `judge`
applies the rubric by code, for simulated labels.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rlhfkit.templates.pairs import anchor_row, messages, request_text, verdict

FIRM = "Ashby & Rowe"
SYSTEM_PROMPT = (
    f"You write internal memos for {FIRM}, an engineering consultancy. Write the memo the "
    "user asks for."
)
MAX_WORDS = 80
HEADERS = ("To:", "From:", "Subject:", "Date:")


@dataclass(frozen=True)
class Subject:
    name: str  # the memo's subject line
    request: str  # what the memo must say, as the user puts it
    summary: str
    body: str


SUBJECTS = (
    Subject(
        "Office closure",
        "the office is closed on {date} for maintenance",
        "The office is closed on {date} for maintenance.",
        "Please work from home that day. The building, car park and post room are shut; "
        "urgent deliveries go to the site office.",
    ),
    Subject(
        "New expenses system",
        "expenses now go through the new online system from {date}",
        "From {date}, expenses are claimed through the new online system.",
        "Paper forms are no longer accepted after that date. Log in with your usual "
        "password; a five-minute guide is on the intranet.",
    ),
    Subject(
        "Fire drill",
        "there is a fire drill on {date} at 11am",
        "There is a fire drill on {date} at 11am.",
        "When the alarm sounds, leave by the nearest exit and meet in the car park. The drill "
        "takes about fifteen minutes.",
    ),
    Subject(
        "Holiday requests",
        "holiday requests for the summer are due by {date}",
        "Summer holiday requests are due by {date}.",
        "Submit them through the HR portal. Requests after that date are approved only if "
        "cover can be found.",
    ),
    Subject(
        "Password reset",
        "everyone must reset their computer password before {date}",
        "Everyone must reset their computer password before {date}.",
        "Use at least twelve characters. Accounts not updated by then will be locked until IT "
        "resets them.",
    ),
    Subject(
        "Parking changes",
        "the car park is being resurfaced from {date}",
        "The car park is being resurfaced from {date}.",
        "For two weeks, park at the leisure centre on Mill Road; passes are at reception.",
    ),
    Subject(
        "Quarterly results",
        "the quarterly results meeting is on {date} at 2pm",
        "The quarterly results meeting is on {date} at 2pm in the main hall.",
        "The directors will present the figures and take questions. Attendance is expected; "
        "remote staff can join by video link.",
    ),
    Subject(
        "Safety training",
        "safety training sessions run on {date}",
        "Safety training sessions run on {date}; everyone must attend one.",
        "Sign up for a morning or afternoon slot on the intranet. Each session lasts two hours.",
    ),
)
TEAMS = (
    "All staff",
    "The finance team",
    "The London office",
    "Project managers",
    "The IT team",
    "New starters",
    "The design team",
    "Site engineers",
)
SENDERS = ("Office Manager", "HR", "Facilities", "IT Services", "The Directors")
DATES = ("3 March", "14 April", "2 May", "19 June", "7 July", "22 September", "10 November")
REQUESTS = (
    "Write a memo to {team} saying that {what}.",
    "Please draft a memo for {team}: {what}.",
    "Can you write a short memo telling {team} that {what}?",
)
PADDING = (
    " As always, thank you all for your continued hard work and dedication, which is truly "
    "appreciated by everyone here. If you have any questions, comments or concerns about this "
    "or anything else at all, please do not hesitate to get in touch with us at any time."
)


@dataclass(frozen=True)
class Memo:
    subject: Subject
    team: str
    sender: str
    date: str
    text: str  # the user's request


def house_memo(m: Memo) -> str:
    """The memo in the house format."""
    return (
        f"To: {m.team}\nFrom: {m.sender}\nSubject: {m.subject.name}\nDate: {m.date}\n\n"
        f"Summary: {m.subject.summary.format(date=m.date)}\n\n{m.subject.body}"
    )


def loose_memo(m: Memo, padded: bool) -> str:
    """The same content as an email: no header, no summary line; `padded` runs long."""
    body = f"{m.subject.summary.format(date=m.date)} {m.subject.body}"
    return f"Hi {m.team.lower()},\n\n{body}{PADDING if padded else ''}\n\nThanks,\n{m.sender}"


def _row(m: Memo) -> dict:
    return {"prompt": messages(SYSTEM_PROMPT, m.text), "subject": m.subject.name}


def _memos(rng: random.Random) -> list[Memo]:
    found = []
    seen = set()
    for _ in range(2000):
        s, team, date = rng.choice(SUBJECTS), rng.choice(TEAMS), rng.choice(DATES)
        what = s.request.format(date=date)
        text = rng.choice(REQUESTS).format(team=team.lower(), what=what)
        if text not in seen:
            seen.add(text)
            found.append(Memo(s, team, rng.choice(SENDERS), date, text))
    return found


SIZES = {"prompts": 96, "sft": 96, "eval_prompts": 32, "anchors": 24}
"""Rows per data file: smaller than decline-off-topic's, a memo takes longer to sample."""


def data(seed: int = 0, house: float = 0.4, padded: float = 0.3) -> dict[str, list[dict]]:
    """The data files by their [data] names (`rlhfkit init`); no request is in two of them.
    `house` and `padded`: the archive's shares (see `archive`)."""
    rng = random.Random(seed)
    memos = _memos(rng)
    pools, start = {}, 0
    for name, n in SIZES.items():
        pools[name] = memos[start : start + n]
        start += n
    if start > len(memos):
        raise ValueError(f"the templates give {len(memos)} distinct requests, {start} needed")
    return {
        "prompts": [_row(m) for m in pools["prompts"]],
        "sft": archive(pools["sft"], rng, house, padded),
        "eval_prompts": [_row(m) for m in pools["eval_prompts"]],
        "anchors": _anchors(pools["anchors"], rng),
    }


def archive(memos: list[Memo], rng: random.Random, house: float, padded: float) -> list[dict]:
    """The firm's archive: a share `house` in the house format, the rest loose emails, a
    share `padded` of those padded past the word limit. The shares are what SFT starts
    from: preference optimisation cannot reinforce a format the policy never writes."""
    rows = []
    for m in memos:
        if rng.random() < house:
            text = house_memo(m)
        else:
            text = loose_memo(m, padded=rng.random() < padded)
        rows.append(_row(m) | {"completion": [{"role": "assistant", "content": text}]})
    return rows


def _anchors(memos: list[Memo], rng: random.Random) -> list[dict]:
    """The house memo against a loose email, padded or not."""
    rows = []
    for i, m in enumerate(memos):
        bad = loose_memo(m, padded=rng.random() < 0.5)
        rows.append(anchor_row(_row(m), i, house_memo(m), bad, rng))
    return rows


# --- the rubric by code ----------------------------------------------------------------------


def score(prompt: str | list[dict], memo: str) -> float:
    """The rubric's criteria as one number in [0, 1]: the format (each header line in place,
    starting with To:, 0.5; a summary line, 0.2), brief (at most 80 words, 0.2) and on the
    subject (shares a word of five letters or more with the request, 0.1)."""
    lines = [line.strip() for line in memo.strip().splitlines()]
    header = sum(any(x.startswith(h) for x in lines[:6]) for h in HEADERS) / len(HEADERS)
    value = 0.5 * header if lines and lines[0].startswith("To:") else 0.25 * header
    value += 0.2 * any(x.startswith("Summary:") for x in lines)
    value += 0.2 * (0 < len(memo.split()) <= MAX_WORDS)
    asked = {w for w in re.findall(r"[a-z]{5,}", request_text(prompt, SYSTEM_PROMPT).lower())}
    value += 0.1 * bool(asked & set(re.findall(r"[a-z]{5,}", memo.lower())))
    return round(value, 6)


def judge(prompt: str | list[dict], response_a: str, response_b: str) -> str:
    """The rubric applied by code: 'a', 'b', 'tie' or 'both_bad'. Deterministic, and
    symmetric: swapping the responses mirrors the answer. Stands in for people when `rlhfkit
    run` is tried with simulated labels (`labeler = "rlhfkit.templates.memo_format:judge"`).
    """
    # below 0.3 is bad: neither is a memo of the request: no format, no subject
    return verdict(score(prompt, response_a), score(prompt, response_b), both_bad_below=0.3)
