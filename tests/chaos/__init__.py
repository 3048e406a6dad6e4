"""A seeded chaos run against the product on a private stack of its own (`make chaos`, `python -m tests.chaos`).

stack: the private dockerd, the driver and the hook (started, supervised, torn down); servers: the containers and
where their data lives; writers: one per server, recording every acknowledged write; schedule: the seeded list of
faults; faults: how each is injected and when it counts as healed; invariants: what must hold at the end; report:
the table and the JSON; run: the whole run. docs/development.md says what it proves.
"""
