"""The training loop's formula FLOPs, cross-checked against torch's own FLOP counter.

Agreement stated: for a GPT-NeoX classifier, torch's measured FLOPs of a forward pass equal
exactly 2·W·T, where W is the weight count of every linear layer (body and head, the head being
applied at every position), and W is within 3% of the non-embedding parameter count (the rest
are biases and layer norms). Neither torch's counter (on this CPU build) nor the formula counts
the attention score/value products (4·L·T²·d), which is under 10% at these lengths. The paper's 2·N·T uses N with the input
embedding included (a lookup, no FLOPs), so it overstates executed work on small-vocab-heavy
models; robnb records it anyway (that is the paper's accounting) and reports executed FLOPs too.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from robnb.flops import FlopCounter, backward_flops, forward_flops, pretrain_flops, train_flops
from robnb.models.counting import classifier_params, non_embedding_params
from robnb.models.ladder import neox_config


def _model(size="neox-s", vocab=512):
    from transformers import GPTNeoXForSequenceClassification

    torch.manual_seed(0)
    return GPTNeoXForSequenceClassification(neox_config(size, vocab))


def test_formula_values():
    assert forward_flops(1000, 10) == 20_000
    assert backward_flops(1000, 10) == 40_000
    assert train_flops(1000, 10) == 60_000
    assert pretrain_flops(7_629_056, 299_892_736_000) == 6 * 7_629_056 * 299_892_736_000
    c = FlopCounter(100)
    c.add_forward(5)
    c.add_backward(5)
    assert c.total == 6 * 100 * 5


def test_forward_formula_agrees_with_torch_flop_counter():
    model = _model()
    cfg = model.config
    T = 48
    x = torch.randint(1, 512, (1, T))
    with FlopCounterMode(display=False) as fc:
        model(input_ids=x)
    measured = fc.get_total_flops()
    linear_weights = sum(m.weight.numel() for m in model.modules()
                         if isinstance(m, torch.nn.Linear))
    assert measured == forward_flops(linear_weights, T)
    body = non_embedding_params(model)
    head = cfg.hidden_size * 2
    assert abs((linear_weights - head) - body) / body < 0.03
    attention = 4 * cfg.num_hidden_layers * T * T * cfg.hidden_size
    assert attention / measured < 0.15


def test_backward_is_about_twice_forward_as_the_formula_says():
    model = _model()
    x = torch.randint(1, 512, (4, 32))
    with FlopCounterMode(display=False) as fwd:
        out = model(input_ids=x, labels=torch.zeros(4, dtype=torch.long))
    with FlopCounterMode(display=False) as bwd:
        out.loss.backward()
    ratio = bwd.get_total_flops() / fwd.get_total_flops()
    # backward = 2x forward for every weight matmul; the first layer's input grad is skipped
    assert 1.7 < ratio <= 2.05


def test_classifier_params_is_the_papers_count():
    model = _model("neox-xs", vocab=512)
    emb = 512 * model.config.hidden_size
    head = model.config.hidden_size * 2
    assert classifier_params(model) == non_embedding_params(model) + emb + head


def test_the_pretrained_lm_reports_the_count_of_the_classifier_it_becomes():
    """Counted by identity: GPT-NeoX's unembedding is ``lm_head`` in current transformers (it
    was ``embed_out``), and a name test silently counted it."""
    from transformers import GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    from robnb.models.counting import lm_classifier_params
    from robnb.models.ladder import neox_config

    for size in ("neox-xs", "neox-m"):
        cfg = neox_config(size, 512)
        lm, clf = GPTNeoXForCausalLM(cfg), GPTNeoXForSequenceClassification(cfg)
        assert lm_classifier_params(lm) == classifier_params(clf)
        assert non_embedding_params(lm) == non_embedding_params(clf)
        emb = 512 * cfg.hidden_size
        assert sum(p.numel() for p in lm.parameters()) == non_embedding_params(lm) + 2 * emb
