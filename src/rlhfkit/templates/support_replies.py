"""The bundled example task: short, helpful customer-support email replies.

Everything is written by code from templates (no downloads): customer emails for the prompt
pools and ideal replies for SFT. The ideal reply answers the actual problem with a concrete
next step, stays under about 60 words, does not hedge, and ends with a sign-off line, the
behaviors the example project's success criteria measure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product

SYSTEM_PROMPT = (
    "You are a customer-support agent for Northwind, an online homeware shop. "
    "Reply to the customer's email."
)
SIGN_OFF = "Best regards,\nThe Northwind Support Team"


@dataclass(frozen=True)
class Issue:
    topic: str
    emails: tuple[str, ...]  # templates with {item}, {order}, {days}
    reply: str  # the ideal reply's body, same placeholders


ISSUES = (
    Issue(
        "late delivery",
        (
            "Hi, I ordered a {item} (order {order}) {days} days ago and it still hasn't arrived. "
            "Where is it?",
            "My order {order} for a {item} was supposed to be here by now. It's been {days} days. "
            "Can you check what's going on?",
        ),
        "Sorry your {item} is late. I checked order {order}: it is with the courier and should "
        "arrive within two working days. I've emailed you the tracking link. If it has not "
        "arrived by then, reply here and we will send a replacement at no cost.",
    ),
    Issue(
        "damaged item",
        (
            "The {item} from order {order} arrived broken. The box was crushed. What can you do?",
            "Hello, my {item} came damaged (order {order}). I'm really disappointed.",
        ),
        "I'm sorry your {item} arrived damaged. Please reply with a photo of the item and the "
        "box, and I will send a free replacement for order {order} the same day. You do not "
        "need to return the broken one.",
    ),
    Issue(
        "refund request",
        (
            "I returned the {item} from order {order} {days} days ago. When do I get my money "
            "back?",
            "Hi, I sent back a {item} (order {order}) and haven't seen a refund yet. It's been "
            "{days} days.",
        ),
        "Thanks for returning the {item}. Your return for order {order} has been received, and "
        "I have issued the refund today. It will reach your original payment method within "
        "five working days.",
    ),
    Issue(
        "wrong item",
        (
            "I ordered a {item} but received something completely different. Order {order}.",
            "Order {order} contained the wrong product instead of my {item}. Please fix this.",
        ),
        "Sorry about the mix-up with order {order}. I have sent the correct {item} by express "
        "delivery today. A prepaid return label for the wrong item is in your inbox; there is "
        "no rush to send it back.",
    ),
    Issue(
        "cancel order",
        (
            "Please cancel my order {order} for the {item}. I ordered it by mistake.",
            "Can I still cancel order {order}? I no longer need the {item}.",
        ),
        "Done: I have cancelled order {order} for the {item}. You have not been charged, and "
        "you will receive a cancellation email shortly.",
    ),
    Issue(
        "change address",
        (
            "I just placed order {order} for a {item} but used my old address. Can you change it?",
            "I moved last week. Can you send my {item} (order {order}) to my new address?",
        ),
        "No problem. Please reply with your new address and I will update order {order} before "
        "the {item} ships. It has not left our warehouse yet, so there will be no delay.",
    ),
    Issue(
        "missing part",
        (
            "My {item} from order {order} is missing parts. I can't assemble it.",
            "The {item} I received (order {order}) came without the screws. What now?",
        ),
        "Sorry the {item} arrived incomplete. I have sent the missing parts for order {order} "
        "by express post; they should arrive in two working days. The assembly guide is "
        "attached in case it helps.",
    ),
    Issue(
        "discount code",
        (
            "My discount code didn't work when I bought a {item} (order {order}). Can you apply "
            "it?",
            "I forgot to use my 10% code on order {order} for the {item}. Can I still get the "
            "discount?",
        ),
        "Thanks for letting us know. I have applied the 10% discount to order {order} for the "
        "{item} and refunded the difference to your card; it will show within five working "
        "days.",
    ),
    Issue(
        "stock question",
        (
            "When will the {item} be back in stock? I've been waiting {days} days.",
            "Is the {item} coming back? It has been sold out for {days} days.",
        ),
        "The {item} is due back in stock next week. I have added you to the restock list, so "
        "you will get an email the moment it is available to order.",
    ),
    Issue(
        "double charge",
        (
            "I was charged twice for order {order} ({item}). Please refund the extra payment.",
            "My bank shows two payments for my {item}, order {order}. Why?",
        ),
        "Sorry for the double charge on order {order}. I have refunded the duplicate payment "
        "today; it will be back on your card within five working days. You will only pay once "
        "for the {item}.",
    ),
)
ITEMS = (
    "table lamp",
    "desk chair",
    "bookshelf",
    "coffee table",
    "duvet set",
    "wall mirror",
    "rug",
    "kettle",
    "set of mugs",
    "bedside table",
    "floor lamp",
    "storage box",
)
OPENINGS = ("", "Hello, ", "Hi there. ", "Good morning. ")
NAMES = ("Sam", "Alex", "Priya", "Jordan", "Maria", "Chen", "Fatima", "Leo", "Ana", "Tom")


def data() -> dict[str, list[dict]]:
    """The project's data files by their [data] names (`rlhfkit init`). The anchors are the
    demo's: 64 with seed 1."""
    prompts, eval_prompts, ideal = build()
    return {
        "prompts": prompts,
        "eval_prompts": eval_prompts,
        "sft": past_replies(ideal),
        "anchors": anchor_items(64, seed=1),
    }


def _email(rng: random.Random, issue: Issue, template: str, item: str) -> tuple[str, dict]:
    fields = {
        "item": item,
        "order": f"#{rng.randint(10000, 99999)}",
        "days": rng.randint(5, 21),
    }
    text = rng.choice(OPENINGS) + template.format(**fields) + f"\n{rng.choice(NAMES)}"
    return text, fields


def _messages(email: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": email},
    ]


def build(seed: int = 0, n_prompts: int = 240, n_eval: int = 100, n_sft: int = 200):
    """Return ``(prompts, eval_prompts, sft)`` as rows in TRL's conversational formats.

    Prompt pools are disjoint: held-out evaluation prompts never appear in training data.
    """
    rng = random.Random(seed)
    combos = list(product(ISSUES, range(2), ITEMS))
    rng.shuffle(combos)
    rows = []
    for issue, t, item in combos * 3:
        email, fields = _email(rng, issue, issue.emails[t], item)
        rows.append((issue, email, fields))
    seen, unique = set(), []
    for r in rows:
        if r[1] not in seen:
            seen.add(r[1])
            unique.append(r)
    needed = n_prompts + n_eval + n_sft
    if len(unique) < needed:
        raise ValueError(f"the templates give {len(unique)} distinct emails, {needed} needed")
    pool, held_out, sft_pool = (
        unique[:n_prompts],
        unique[n_prompts : n_prompts + n_eval],
        unique[n_prompts + n_eval : needed],
    )
    prompts = [{"prompt": _messages(e), "topic": i.topic} for i, e, _ in pool]
    eval_prompts = [{"prompt": _messages(e), "topic": i.topic} for i, e, _ in held_out]
    sft = [
        {
            "prompt": _messages(e),
            "completion": [
                {"role": "assistant", "content": i.reply.format(**f) + "\n\n" + SIGN_OFF}
            ],
            "topic": i.topic,
        }
        for i, e, f in sft_pool
    ]
    return prompts, eval_prompts, sft


HEDGES = (
    " I think that should sort it out, but I'm not sure.",
    " Maybe that helps.",
    " I believe that is everything, but perhaps check with us again.",
)
FILLER = (
    " Please do not hesitate to get in touch again if you have any further questions or "
    "concerns about this or any other order, as we are always very happy to help you."
)


def past_replies(sft: list[dict], seed: int = 0, sign_off: float = 0.4, hedge: float = 0.2,
                 verbose: float = 0.25) -> list[dict]:
    """The SFT rows as a real team's archive would hold them: every reply solves the
    problem, but only some follow the house style — a share signs off, some hedge, some pad.

    This is what makes the example honest: SFT teaches the task and makes the sign-off
    *appear* (a 135M model never writes one unprompted, and preference optimisation cannot
    reinforce what the policy never samples); the preference stages then have a behavior to
    strengthen. The shares are the expected pass rates after SFT, before any preferences.
    """
    rng = random.Random(seed)
    out = []
    for row in sft:
        text = row["completion"][0]["content"].removesuffix("\n\n" + SIGN_OFF)
        if rng.random() < hedge:
            text += rng.choice(HEDGES)
        if rng.random() < verbose:
            text += FILLER
        if rng.random() < sign_off:
            text += "\n\n" + SIGN_OFF
        out.append(row | {"completion": [{"role": "assistant", "content": text}]})
    return out


def anchor_items(n: int, seed: int = 1) -> list[dict]:
    """Anchor pairs with a known answer (``label`` A or B) for the annotation queue: the
    ideal reply to an email against one that only apologises, restates the email or hedges
    without acting. Emails come from the SFT pool's templates with fresh order numbers, so
    no anchor repeats a prompt the policy is trained or evaluated on."""
    rng = random.Random(seed)
    bad = (
        lambda email, reply: "I'm so sorry to hear about this. We value you as a customer."
        + "\n\n" + SIGN_OFF,
        lambda email, reply: "Thank you for your email about this. " + email.split("\n")[0],
        lambda email, reply: "I think maybe someone could look into it, but I'm not sure what "
        "we can do.",
    )
    rows = []
    for i in range(n):
        issue = rng.choice(ISSUES)
        email, fields = _email(rng, issue, rng.choice(issue.emails), rng.choice(ITEMS))
        good = issue.reply.format(**fields) + "\n\n" + SIGN_OFF
        worse = rng.choice(bad)(email, good)
        good_first = rng.random() < 0.5
        first, second = (good, worse) if good_first else (worse, good)
        rows.append(
            {
                "id": f"anchor-{i}",
                "prompt": _messages(email),
                "response_a": [{"role": "assistant", "content": first}],
                "response_b": [{"role": "assistant", "content": second}],
                "label": "A" if good_first else "B",
            }
        )
    return rows
