"""The container image, the compose example and the Kubernetes manifest, built and run for real
with podman by scripts/container-check.sh (root on Debian; it installs podman with apt).

`.ci/run` calls the script directly, so this wrapper only runs when asked for:
    AUTHPROXY_CONTAINER_TESTS=1 pytest -m container
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
    pytest.mark.skipif(os.environ.get("AUTHPROXY_CONTAINER_TESTS") != "1",
                       reason="set AUTHPROXY_CONTAINER_TESTS=1 (.ci/run runs "
                              "scripts/container-check.sh itself)"),
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0
                       or shutil.which("apt-get") is None,
                       reason="the container check needs root on Debian (apt-get, podman)"),
]


@pytest.mark.timeout(1500)
def test_container_check() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert proc.stdout.rstrip().endswith("PASS"), proc.stdout[-2000:]
