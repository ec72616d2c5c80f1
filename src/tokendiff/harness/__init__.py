"""lm-evaluation-harness: tokendiff models scored by the field's harness (``pip install 'tokendiff[eval]'``).

- :mod:`tokendiff.harness.backend`: the ``tokendiff`` model backend (an ``lm_eval.api.model.LM``);
- :mod:`tokendiff.harness.settings`: its model arguments, checked;
- :mod:`tokendiff.harness.run`: ``simple_evaluate`` with that backend, writing what ``lm_eval --output_path``
  writes (``tokendiff lm-eval``);
- ``python -m tokendiff.harness`` / ``tokendiff-lm-eval``: lm-eval's own command line with the backend
  registered (lm-eval 0.4 does not load third-party backends from entry points).

The estimator behind ``loglikelihood`` is :mod:`tokendiff.evaluation.conditional`.
"""
