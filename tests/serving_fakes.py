"""Fixtures of the serving tests: a tiny student made here (random or overfitted T5 weights, byte
tokenizer, no download) in the layout the train stage writes (<dir>/model/ and <dir>/card.json),
and one throwaway MLflow store per test module."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test uses its own model name."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri
    mlflow.set_tracking_uri(None)


def make_student(path: Path, *, mix: str = "etd", forms=("cot", "pot", "eot"), target: str | None = None,
                 steps: int = 150, seed: int = 0, **card_extra) -> Path:
    """Write a tiny student to ``path``; with ``target`` the model is overfitted to answer it to every input.

    Overfitting a 30k-parameter T5 on one (input, target) pair takes about a second on a CPU and
    makes greedy decoding write ``target`` for any question, so a test controls what the real
    model says (for example a program that never ends).
    """
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      # at the default scale a random T5 only ever writes <pad>; larger weights write bytes
                      initializer_factor=1.0 if target is not None else 5.0)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if target is not None:
        inputs = tokenizer(["Question: x\n" + form_card(forms[0])["instruction"] + "\n"], return_tensors="pt")
        labels = tokenizer([target], return_tensors="pt").input_ids
        optim = torch.optim.Adam(model.parameters(), lr=1e-2)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a model this small only loses time to threads on a shared CPU
        try:
            model.train()
            for _ in range(steps):
                model(**inputs, labels=labels).loss.backward()
                optim.step()
                optim.zero_grad()
        finally:
            torch.set_num_threads(threads)
        model.eval()
    model.generation_config.max_new_tokens = 64
    path = Path(path)
    model.save_pretrained(path / "model")
    tokenizer.save_pretrained(path / "model")
    card = {"mix": mix, "forms": {f: form_card(f) for f in forms},
            "student": "tiny-test", "tokenizer": "byt5", "data_digest": "d" * 16, "train_run_id": None,
            "preset": "test", "best_val_loss": 1.0, **card_extra}
    (path / "card.json").write_text(json.dumps(card))
    return path


def form_card(name: str) -> dict:
    """{"version", "instruction"} of the real form, as the train stage writes it into the card."""
    from distill.thoughts import get_form

    form = get_form(name)
    return {"version": form.version, "instruction": form.instruction}
