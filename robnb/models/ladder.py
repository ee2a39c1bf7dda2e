"""The offline model family: GPT-NeoX (Pythia architecture) at several sizes, pretrained here.

Sizes span well over 30x in non-embedding parameters; all share one tokenizer and data order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeoXShape:
    hidden: int
    layers: int
    heads: int

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


LADDER: dict[str, NeoXShape] = {
    "neox-xs": NeoXShape(hidden=32, layers=1, heads=2),
    "neox-s": NeoXShape(hidden=64, layers=2, heads=4),
    "neox-m": NeoXShape(hidden=96, layers=3, heads=4),
    "neox-l": NeoXShape(hidden=128, layers=4, heads=4),
    "neox-xl": NeoXShape(hidden=192, layers=6, heads=6),
}


def neox_config(size: str, vocab_size: int, max_positions: int = 512, eos_id: int = 0):
    from transformers import GPTNeoXConfig

    if size not in LADDER:
        raise KeyError(f"unknown ladder size '{size}'; known: {', '.join(LADDER)}")
    s = LADDER[size]
    return GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=s.hidden, num_hidden_layers=s.layers,
        num_attention_heads=s.heads, intermediate_size=s.intermediate,
        max_position_embeddings=max_positions, rotary_pct=0.25, use_parallel_residual=True,
        tie_word_embeddings=False, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=eos_id, hidden_dropout=0.0, attention_dropout=0.0,
    )
