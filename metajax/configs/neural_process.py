"""The latent Neural Process's and the Attentive Neural Process's settings.

References:
  Garnelo et al., "Neural Processes", arXiv:1807.01622 (2018); Kim et al.,
  "Attentive Neural Processes", ICLR 2019. Code:
  https://github.com/deepmind/neural-processes
  (``attentive_neural_process.ipynb``: ``HIDDEN_SIZE = 128``,
  ``latent_encoder_output_sizes = [128] * 4``, ``num_latents = 128``,
  ``deterministic_encoder_output_sizes = [128] * 4``,
  ``decoder_output_sizes = [128] * 2 + [2]``; ``MODEL_TYPE='NP'`` is uniform
  attention, ``'ANP'`` multihead attention with ``rep='mlp'``,
  ``output_sizes=[128] * 2``; Adam 1e-4, batches of 16, 100,000 iterations,
  ``MAX_CONTEXT_POINTS = 50``).

The GP experiment runs them on the CNP's tasks (its context bound and
batch), so the three models sit in one table; the notebook's own data
differ (random kernel parameters, up to 50 context points) and the entry
says so.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_CODE = "deepmind/neural-processes attentive_neural_process.ipynb"
_SIZES = dict(latent_sizes=(128,) * 4, num_latents=128,
              deterministic_sizes=(128,) * 4, decoder_sizes=(128,) * 2,
              attention_sizes=(128,) * 2)


def _setting(attention: str) -> PaperSetting:
  kind = "NP" if attention == "uniform" else "ANP"
  return PaperSetting(
      learner=dict(attention=attention, **_SIZES),
      outer=dict(optimizer="adam", meta_lr=1e-4, meta_batch=16,
                 meta_iters=100_000, max_context=50),
      source=(f"{_CODE} (MODEL_TYPE='{kind}', HIDDEN_SIZE 128, Adam 1e-4, "
              "batch 16, 100,000 iterations)"),
      note=("the notebook trains on GP curves with random kernel parameters "
            "and up to 50 context points; metajax's GP experiment uses the "
            "CNP's tasks for all three models"))


SETTINGS: dict[str, PaperSetting] = {"gp_1d": _setting("uniform")}
SETTINGS_ANP: dict[str, PaperSetting] = {"gp_1d": _setting("multihead")}
