"""Lua scripts, one ``.lua`` file each (their header comments document KEYS/ARGV)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from eventbus.wire import Script


def source(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    heartbeat: Script
    release: Script
    dead_letter: Script
    reclaim: Script
    delete_consumer: Script
    publish_dedup: Script
    idem_begin: Script
    idem_commit: Script
    idem_mark: Script
    idem_extend: Script
    idem_abort: Script
    idem_tx_commit: Script
    acl_probe: Script
    sched_record: Script
    redrive: Script

    @classmethod
    def load(cls) -> Scripts:
        return cls(
            heartbeat=Script(source("heartbeat")),
            release=Script(source("release")),
            dead_letter=Script(source("dead_letter")),
            reclaim=Script(source("reclaim")),
            delete_consumer=Script(source("delete_consumer")),
            publish_dedup=Script(source("publish_dedup")),
            idem_begin=Script(source("idem_begin")),
            idem_commit=Script(source("idem_commit")),
            idem_mark=Script(source("idem_mark")),
            idem_extend=Script(source("idem_extend")),
            idem_abort=Script(source("idem_abort")),
            idem_tx_commit=Script(source("idem_tx_commit")),
            acl_probe=Script(source("acl_probe")),
            sched_record=Script(source("sched_record")),
            redrive=Script(source("redrive")),
        )


SCRIPTS = Scripts.load()
