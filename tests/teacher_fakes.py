"""Stand-ins for the thought forms while distill/thoughts/{cot,pot,eot}.py are being written, and for
subprocess runs: ``install()`` puts a fake form into ``sys.modules`` only where the real one is missing.

A fake form's verifier reads the last number of a completion; a real form always wins.
"""
from __future__ import annotations

import importlib
import sys
import types

from distill.answers import answers_match, last_number
from distill.thoughts import FORM_NAMES, Extraction, Verdict

INSTRUCTIONS = {"cot": "Let's think step by step.", "pot": "Let\u2019s break down the code step by step",
                "eot": "System of linear equations: (Do not simplify)"}


class FakeForm:
    version = 1

    def __init__(self, name: str):
        self.name = name
        self.instruction = INSTRUCTIONS[name]

    def teacher_messages(self, question: str) -> list[dict]:
        return [{"role": "system", "content": f"Answer in {self.name}."}, {"role": "user", "content": question}]

    def student_input(self, question: str) -> str:
        return "Question: " + question + "\n" + self.instruction + "\n"

    def student_target(self, completion: str) -> str:
        return completion.strip()

    def extract_many(self, completions, *, timeout=5.0, strict=False):
        out = []
        for c in completions:
            n = last_number(c or "")
            out.append(Extraction(n) if n is not None else Extraction(None, "no_answer", "no number"))
        return out

    def verify_many(self, completions, golds, *, timeout=5.0, strict=False):
        verdicts = []
        for e, g in zip(self.extract_many(completions), golds):
            if e.status != "ok":
                verdicts.append(Verdict(e.status, None, e.reason, self.name, self.version))
            elif answers_match(e.answer, g):
                verdicts.append(Verdict("correct", e.answer, "", self.name, self.version))
            else:
                verdicts.append(Verdict("wrong_answer", e.answer, "wrong", self.name, self.version))
        return verdicts


def real_forms() -> bool:
    try:
        for name in FORM_NAMES:
            importlib.import_module(f"distill.thoughts.{name}").FORM
        return True
    except (ImportError, AttributeError):
        return False


def install(monkeypatch=None) -> list[str]:
    """Fake every form whose module is missing; returns the names faked."""
    faked = []
    for name in FORM_NAMES:
        modname = f"distill.thoughts.{name}"
        try:
            importlib.import_module(modname).FORM
            continue
        except (ImportError, AttributeError):
            pass
        module = types.ModuleType(modname)
        module.FORM = FakeForm(name)
        if monkeypatch is not None:
            monkeypatch.setitem(sys.modules, modname, module)
        else:
            sys.modules[modname] = module
        faked.append(name)
    return faked


if __name__ == "__main__":  # python tests/teacher_fakes.py generate ...: the CLI with fakes where needed
    install()
    from distill.cli import main

    sys.argv = ["distill", *sys.argv[1:]]
    main()
