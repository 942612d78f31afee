"""The README's API tour runs as written (with a shorter training run)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_api_tour_runs(tmp_path, monkeypatch):
  text = (ROOT / "README.md").read_text()
  code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
  code = code.replace('num_steps=1000, checkpoint_dir="runs/ckpt"',
                      f'num_steps=20, checkpoint_dir="{tmp_path}", progress=False')
  assert "num_steps=20" in code, "README training call changed; update this test"
  ns = {}
  exec(compile(code, "README.md", "exec"), ns)
  assert ns["curve"].shape == (11,)
  assert int(ns["state"].step) == 20
  assert set(ns["metrics"]) >= {"loss", "pre_loss"}
