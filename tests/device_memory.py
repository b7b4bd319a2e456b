"""Device memory counters for the probes run on the CPU (tests of train and evaluate's batch sizing):
the peaks a GPU would report, in order, and the memory it would offer. They replace the GPU's counters
(distill.decoding.CudaMemory), never the probe under test."""
from __future__ import annotations


class ScriptedMemory:
    def __init__(self, peaks, budget=24e9):
        import torch

        self.device, self.peaks, self.total = torch.device("cpu"), list(peaks), budget

    def reset(self):
        pass

    def peak(self):
        return self.peaks.pop(0)

    def budget(self):
        return self.total
