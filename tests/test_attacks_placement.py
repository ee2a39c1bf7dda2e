"""The attack lands exactly where the placement says, and only round-tripping tokens are used."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import one_thread, tiny  # noqa: F401 (autouse fixture)

from robnb.attacks.placement import (
    allowed_token_mask,
    decode_attack,
    initial_attack_ids,
    roundtrip_mask,
)
from robnb.attacks.run import run_attack
from robnb.params import PLACEMENTS, AttackSpec
from robnb.tasks import OFFLINE_TASKS, load_task
from robnb.tasks.encoding import encode_slot, encode_text

ATTACK = " zq@&Wx"


@pytest.mark.parametrize("task", OFFLINE_TASKS)
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_attack_text_sits_at_the_placement_position(task, placement):
    tok = tiny().tokenizer
    position = PLACEMENTS[placement]
    for ex in load_task(task, "validation", n=3, seed=0):
        before, after = encode_slot(tok, ex, position)
        attack = encode_text(tok, ATTACK)
        text = tok.decode(before + attack + after, clean_up_tokenization_spaces=False)
        assert text == ex.render(ATTACK, position)
        at = len(ex.instructions) + len(ex.prefix) + round(position * len(ex.modifiable))
        assert text[at:at + len(ATTACK)] == ATTACK
        assert decode_attack(tok, attack) == ATTACK
        if ex.modifiable.strip():
            # the three placements really differ for tasks with attackable content
            others = {round(p * len(ex.modifiable)) for p in PLACEMENTS.values()}
            assert len(others) == 3


def test_filter_rejects_a_candidate_that_changes_under_decode_encode():
    tok = tiny().tokenizer
    split = merged = None
    for tid in range(len(tok)):
        s = decode_attack(tok, [tid])
        if len(s) < 2 or tid in tok.all_special_ids:
            continue
        parts = encode_text(tok, s[:1]) + encode_text(tok, s[1:])
        if parts != [tid] and decode_attack(tok, parts) == s:
            split, merged = parts, [tid]
            break
    assert split is not None, "tokenizer has no merged token to test with"
    assert roundtrip_mask(tok, torch.tensor([split])).tolist() == [False]
    assert roundtrip_mask(tok, torch.tensor([merged])).tolist() == [True]
    both = torch.tensor([split, merged + merged[:1] * (len(split) - 1)])
    mask = roundtrip_mask(tok, both)
    assert mask[0].item() is False
    assert mask[1].item() == (encode_text(tok, decode_attack(tok, both[1].tolist())) == both[1].tolist())


def test_every_logged_attack_round_trips_and_avoids_special_tokens():
    t = tiny()
    examples = load_task("spam", "validation", n=10, seed=1)
    for name in ("gcg", "random_token"):
        _, strings = run_attack(t.classifier, t.tokenizer, examples,
                                AttackSpec(name=name, iterations=3, n_candidates=32, top_k=32))
        assert strings
        for s in strings:
            ids = s["attack_ids"]
            assert encode_text(t.tokenizer, s["attack_string"]) == ids
            assert not set(ids) & set(t.tokenizer.all_special_ids)


def test_initial_attack_is_exactly_n_tokens_of_at_ampersand():
    tok = tiny().tokenizer
    for n in (1, 5, 10, 20):
        ids = initial_attack_ids(tok, n)
        assert len(ids) == n
        text = decode_attack(tok, ids)
        assert set(text) <= {"@", "&"} and text.startswith("@")
        assert encode_text(tok, text) == ids


def test_allowed_tokens_exclude_specials_and_unknown_ids():
    tok = tiny().tokenizer
    mask = allowed_token_mask(tok, len(tok) + 7)
    assert not mask[len(tok):].any()
    assert not mask[tok.eos_token_id]
    assert mask.sum() == len(tok) - len(set(tok.all_special_ids))
    ascii_mask = allowed_token_mask(tok, len(tok), ascii_only=True)
    assert bool((ascii_mask <= mask[: len(tok)]).all()) and ascii_mask.sum() < mask.sum()
