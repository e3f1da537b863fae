"""Writes the torch-made checkpoints weights/tests/hostile.rs reads (run once, commit output).

python3 make_torch_files.py   (torch 2.x; the tests themselves never need torch)
"""
import torch

# A transposed view: size (3, 2), stride (1, 3) into a 6-element storage.
torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, "transposed.bin")
# A slice: offset 4, size (3,) into the whole 10-element storage (torch saves all of it).
torch.save({"v": torch.arange(10, dtype=torch.float32)[4:7]}, "slice.bin")
# The legacy (pre-1.6) sequential format, with a float and an int64 tensor.
torch.save(
    {"a": torch.arange(4, dtype=torch.float32), "b": torch.tensor([1, 2], dtype=torch.int64)},
    "legacy.bin",
    _use_new_zipfile_serialization=False,
)
