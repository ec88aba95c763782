"""Where versions are served is chosen in one place, and refuses what the target cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermaops.errors import ConfigError
from dermaops.registry.serving import ClusterServing, LocalServing, serving_for
from dermaops.settings import Home


def test_the_target_is_chosen_once_and_a_local_canary_is_refused(tmp_path: Path) -> None:
    assert isinstance(serving_for("local", Home(tmp_path)), LocalServing)
    cluster = serving_for("kubernetes", release="r", namespace="n", canary_percent=20)
    assert cluster == ClusterServing("r", "n", 20)
    with pytest.raises(ConfigError, match="a canary \\(20%\\) needs the cluster"):
        serving_for("local", Home(tmp_path), canary_percent=20)
    with pytest.raises(ConfigError, match="use one of local, kubernetes"):
        serving_for("laptop")
