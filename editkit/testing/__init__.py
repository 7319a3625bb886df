"""What a method author tests with, shipped in the package.

- :mod:`editkit.testing.models`: tiny random models and a byte-level tokenizer (no download);
- :mod:`editkit.testing.test_conformance`: the conformance suite every editor and each of its declared
  config variants must pass; run it with ``pytest --pyargs editkit.testing`` from anywhere (the fixtures
  come from :mod:`editkit.testing.plugin`, a pytest plugin that editkit's ``pytest11`` entry point loads;
  ``--editkit-editors NAME,...`` keeps only some editors).
"""

from .models import BigramModel, tiny_llama, tiny_model_and_tokenizer, tiny_tokenizer

__all__ = ["BigramModel", "tiny_llama", "tiny_model_and_tokenizer", "tiny_tokenizer"]
