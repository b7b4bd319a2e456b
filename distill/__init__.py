"""distill: Equation-of-Thought and Ensemble Thoughts Distillation of math reasoning into small students.

Data flow: problems -> teacher -> samples -> verify -> datasets -> mix -> train -> student
-> evaluate -> registry -> serve. See README.md and ../shared/docs/METHOD.md.
"""
__version__ = "0.1.0"
