"""train.distribute: augmented extraction and fine-tuning under MirroredStrategy on two logical CPUs.

TensorFlow fixes its logical devices when it starts, so the run happens in a fresh Python process.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from allx.errors import UsageError
from allx.train.distribute import check_strategy

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from allx.train.trainer import TrainConfig, train_model

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = TrainConfig(data_dir=data, out_dir=out, cache_dir=out / "cache", backbone="efficientnet-lite0",
                         image_size=32, epochs=1, batch_size=8, head="gap", learning_rate=1e-3,
                         augment="dihedral,stain", augment_copies=1, fine_tune_layers=2, fine_tune_epochs=1,
                         strategy="mirrored")
    result = train_model(config)
    print(len(result.history["fine_tune"]["loss"]))
""")


@pytest.mark.slow
def test_mirrored_strategy_runs_the_image_phases_on_two_devices(tmp_path):
    from allx.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", per_class=16, size=32)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "1", "one fine-tuning epoch ran"
    settings = json.loads((out / "train_config.json").read_text())
    assert settings["distribution"] == {"name": "MirroredStrategy", "replicas": 2}
    markers = [json.loads(p.read_text()) for p in (out / "cache").glob("*.json")]
    assert sorted(m["views_per_image"] for m in markers) == [1, 1, 9], "train: 8 clean + 1 jittered view"


def test_unknown_strategy_is_refused():
    with pytest.raises(UsageError, match="expected one of auto, mirrored, multiworker"):
        check_strategy("horovod")


def test_auto_on_one_device_without_tf_config_changes_nothing(monkeypatch):
    import tensorflow as tf

    from allx.train.distribute import describe_strategy, make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("this machine has several GPUs: auto mirrors over them")
    assert describe_strategy(make_strategy("auto"))["replicas"] == 1
