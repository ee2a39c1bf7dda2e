"""The hub code paths (datasets.load_dataset, from_pretrained) run against local fixtures."""

import pytest
import torch

from robnb.models.counting import classifier_params
from robnb.models.registry import hub_id, load_sequence_classifier, model_source
from robnb.tasks import load_task

datasets = pytest.importorskip("datasets")


def _rows(kind: str, n: int):
    if kind == "hh":
        return {"chosen": [f"\n\nHuman: q{i}\n\nAssistant: good answer {i}" for i in range(n)],
                "rejected": [f"\n\nHuman: q{i}\n\nAssistant: bad answer {i}" for i in range(n)]}
    return {"text": [f"{kind} text number {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}


@pytest.mark.parametrize("task, kind", [("imdb", "imdb"), ("enron_spam", "enron"),
                                        ("helpful", "hh"), ("harmless", "hh")])
def test_hub_tasks_from_save_to_disk(tmp_path, task, kind):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(_rows(kind, 10)),
                               "test": datasets.Dataset.from_dict(_rows(kind, 6))})
    dd.save_to_disk(str(tmp_path / task))
    tr = load_task(task, "train", source=str(tmp_path / task))
    va = load_task(task, "validation", source=str(tmp_path / task))
    assert len(tr) == 10 and len(va) == 6
    if kind == "hh":
        # order alternates: chosen first on even rows (FIRST), second on odd rows (SECOND)
        assert [e.label for e in tr[:4]] == [0, 1, 0, 1]
        assert tr[0].modifiable.index("good answer 0") < tr[0].modifiable.index("bad answer 0")
        assert tr[1].modifiable.index("good answer 1") > tr[1].modifiable.index("bad answer 1")
        assert tr[0].label_texts == (" FIRST", " SECOND")
    else:
        assert [e.label for e in tr[:4]] == [0, 1, 0, 1]
        assert "text number 0" in tr[0].modifiable


def test_hub_task_through_load_dataset_on_a_data_folder(tmp_path):
    """A folder of Parquet files goes through datasets.load_dataset itself, as a hub id would."""
    folder = tmp_path / "imdb"
    folder.mkdir()
    datasets.Dataset.from_dict(_rows("imdb", 8)).to_parquet(str(folder / "train-00000.parquet"))
    datasets.Dataset.from_dict(_rows("imdb", 4)).to_parquet(str(folder / "test-00000.parquet"))
    assert len(load_task("imdb", "train", source=str(folder))) == 8
    assert len(load_task("imdb", "validation", source=str(folder))) == 4


def test_pythia_parameter_count_matches_the_paper():
    """Pythia-14m's classifier (no unembedding, plus a 2-way head) has 7,629,056 parameters."""
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=128, num_hidden_layers=6,
                        num_attention_heads=4, intermediate_size=512, num_labels=2)
    with torch.device("meta"):
        model = GPTNeoXForSequenceClassification(cfg)
    assert classifier_params(model) == 7_629_056


def _tiny_tokenizer(tmp_path):
    from robnb.models.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(["hello world, a tiny corpus for a tiny tokenizer"] * 20, 300,
                               tmp_path / "tok")


@pytest.mark.parametrize("family", ["pythia", "qwen2.5"])
def test_hub_classifier_loads_from_a_local_save(tmp_path, family):
    from transformers import (GPTNeoXConfig, GPTNeoXForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    tok = _tiny_tokenizer(tmp_path)
    if family == "pythia":
        lm = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32,
                                              num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64))
    else:
        lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32,
                                          num_hidden_layers=2, num_attention_heads=2,
                                          num_key_value_heads=1, intermediate_size=64))
    folder = tmp_path / family
    lm.save_pretrained(str(folder))
    tok.pad_token = None
    tok.save_pretrained(str(folder))
    model, tokenizer = load_sequence_classifier(folder)
    assert model.config.num_labels == 2
    assert tokenizer.pad_token == tokenizer.eos_token  # pad = EOS, as the paper's classifiers
    assert model.config.pad_token_id == tokenizer.eos_token_id
    enc = tokenizer(["hello world", "a tiny"], padding=True, return_tensors="pt")
    assert model(**enc).logits.shape == (2, 2)


def test_hub_ids_and_revisions():
    assert hub_id("pythia", "410m") == "EleutherAI/pythia-410m"
    assert hub_id("qwen2.5", "0.5B") == "Qwen/Qwen2.5-0.5B"
    src, rev = model_source("pythia", "1b")
    assert src == "EleutherAI/pythia-1b" and rev == "step143000"
    with pytest.raises(KeyError, match="hub families"):
        hub_id("local-neox", "neox-s")
