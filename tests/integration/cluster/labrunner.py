"""A run of the harness that a test can SIGTERM or SIGKILL: a lab of one host and one process."""

from __future__ import annotations

import json
import time

from convergent_shop.sim.cluster import Lab, exit_on_sigterm

if __name__ == "__main__":
    exit_on_sigterm()
    with Lab(["a"], postgres=False, nats_nodes=0) as lab:
        sleeper = lab.spawn("a", "sleeper", ["sleep", "300"])
        assert lab.network is not None
        print(json.dumps({"tag": lab.network.tag, "pid": sleeper.pid}), flush=True)
        time.sleep(300)
