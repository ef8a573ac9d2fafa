"""The durable records of modules and executions, as stored in LMDB (JSON, versioned by the
store's format version). Plain dataclasses: the API layer converts them to protobuf."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import Enum


class State(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    PAUSED = "PAUSED"       # checkpointed, no worker: `roost resume` continues it
    SLEEPING = "SLEEPING"   # checkpointed in a durable sleep: a stored timer wakes it

    @property
    def ended(self) -> bool:
        return self in (State.EXITED, State.FAILED, State.KILLED)


@dataclass(frozen=True)
class Owner:
    """One side of a handover at its epoch, as `ExecutionRecord.migration` and `.prepared`
    store it: the text "<epoch> <node> <address>" (node ids and addresses hold no spaces:
    `authority.check_node`, `check_address`)."""
    epoch: int
    node: str
    address: str = ""

    def __str__(self) -> str:
        return f"{self.epoch} {self.node} {self.address}"

    @classmethod
    def parse(cls, text: str) -> "Owner | None":
        """The handover `text` names; None for "" (none). A field missing is empty, an epoch
        that is not a number 0 (matches no handover)."""
        if not text:
            return None
        epoch, node, address = (text.split(" ", 2) + ["", ""])[:3]
        return cls(int(epoch) if epoch.isdigit() else 0, node, address)

    @classmethod
    def epoch_of(cls, text: str) -> int:
        """The epoch of the handover `text` names (0: none)."""
        owner = cls.parse(text)
        return owner.epoch if owner is not None else 0


@dataclass
class ModuleRecord:
    sha256: str
    name: str
    size_bytes: int
    uploaded_at: float
    imports: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "ModuleRecord":
        return cls(**json.loads(raw))


@dataclass
class ExecutionRecord:
    id: str
    module_sha256: str
    module_name: str
    argv: list[str]
    env: list[tuple[str, str]]
    mounts: list[str]
    name: str = ""
    state: State = State.PENDING
    exit_code: int = 0
    error: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    worker_pid: int = 0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    host_calls: int = 0
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    cooperative: bool = False
    checkpoint_every_seconds: float = 0.0
    node_id: str = ""
    restores: int = 0             # times a new worker took over (worker died, daemon restarted)
    journal_records: int = 0
    checkpoints: int = 0
    dirty_tracker: str = ""       # how the latest checkpoint found written pages
    restore_seconds: float = 0.0  # the latest restore: rebuilding memory and state in a worker
    # Ownership (see `handover`): the node that runs it, at which epoch; a daemon runs an
    # execution only while it is its owner, and every handover bumps the epoch.
    owner: str = ""
    epoch: int = 1
    owner_address: str = ""       # where the owner serves its API
    replicas: list[str] = field(default_factory=list)   # nodes holding its checkpoints
    # A migration in progress. On the source, `migration` is the target (`Owner` text: "<epoch>
    # <target node> <target address>") from the final stop until the decision; after deciding
    # to give the execution up, `handing_over` is that epoch until the target confirms (retried
    # until it does). On the target, `prepared` is the source ("<epoch> <source node> <source
    # address>") from PREPARE to COMMIT or ABORT (asked of the source again after a restart).
    migration: str = ""
    handing_over: int = 0
    prepared: str = ""
    # What happened to the execution that its outcome does not say (a corrupt checkpoint was
    # skipped at a restore), oldest first: shown by `roost inspect`.
    notes: list[str] = field(default_factory=list)
    # Outbound HTTP: the destinations it may reach (its --allow-http prefixes, within the
    # daemon's [[http.allow]]), and what its requests did (`executions.outbound`).
    allow_http: list[str] = field(default_factory=list)
    http_sent: int = 0            # sent and answered (any status), live
    http_replayed: int = 0        # answered from the journal on a replay
    http_resent: int = 0          # cut off by a crash, sent again with the same key
    http_refused: int = 0         # malformed or denied (EINVAL, EACCES): never sent
    http_failed: int = 0          # sent, no response (connection, timeout, size): an errno
    http_interrupted: list[str] = field(default_factory=list)   # cut off, not sent again

    def to_json(self) -> bytes:
        d = dataclasses.asdict(self)
        d["state"] = self.state.value
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "ExecutionRecord":
        """Parse and type-check a record (a peer's push carries one: a malformed field must be
        refused here, not break `roost ps` for every user later). ValueError says what is
        wrong."""
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("an execution record is a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: _typed(k, v, str(known[k].type)) for k, v in d.items() if k in known}
        missing = [name for name, f in known.items() if name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"an execution record needs {', '.join(missing)}")
        return cls(**values)


_SCALARS: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float), "bool": bool}


def _typed(name: str, value, kind: str):
    """`value` as field `name` of type `kind` (the annotation's text), or ValueError."""
    if kind == "State":
        if value not in State._value2member_map_:
            raise ValueError(f"record field {name}: {str(value)[:40]!r} is not a state")
        return State(value)
    if kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"record field {name}: a list of strings is needed")
        return value
    if kind == "list[tuple[str, str]]":
        if not isinstance(value, list) or not all(
                isinstance(kv, list) and len(kv) == 2 and all(isinstance(x, str) for x in kv)
                for kv in value):
            raise ValueError(f"record field {name}: a list of [name, value] string pairs is needed")
        return [tuple(kv) for kv in value]
    expected = _SCALARS[kind]
    if not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool)):
        raise ValueError(f"record field {name}: a {kind} is needed")
    if kind == "float" and isinstance(value, (int, float)) and not math.isfinite(value):
        raise ValueError(f"record field {name}: a finite number is needed")
    return value
