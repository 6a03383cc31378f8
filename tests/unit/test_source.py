"""Static group membership ids: stable across restarts, never shared by two live instances."""

from __future__ import annotations

import socket
from pathlib import Path

from monitor.stream.source import claim_instance_id


def test_instance_ids_take_the_lowest_free_slot_and_free_it_on_exit(tmp_path: Path) -> None:
    first, lock1 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    second, lock2 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    host = socket.gethostname()
    assert (first, second) == (f"{host}-grp_1-0", f"{host}-grp_1-1")  # two live instances: two ids
    lock1.close()  # the first instance dies (the kernel drops its lock, even on SIGKILL)
    again, lock3 = claim_instance_id("grp/1", lock_dir=str(tmp_path))
    assert again == first  # its replacement takes its id back: no rebalance, no session timeout
    other, lock4 = claim_instance_id("other", lock_dir=str(tmp_path))
    assert other == f"{host}-other-0"
    for lock in (lock2, lock3, lock4):
        lock.close()
