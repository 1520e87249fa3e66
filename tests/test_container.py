"""The container image, the compose example and the Kubernetes manifest, built and run for real
with podman by scripts/container-check.sh (root only; it installs podman with apt).

Run with `pytest -m container`; `.ci/run` may call the script directly instead.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "container-check.sh"

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0
                       or shutil.which("apt-get") is None,
                       reason="the container check needs root on Debian (apt-get, podman)"),
]


@pytest.mark.timeout(1500)
def test_container_check() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "container-check: " in proc.stdout and "PASS" in proc.stdout.splitlines()[-1]
