"""Client partitions: which train examples each virtual client holds.

`schemes` draws them (flwr-datasets' partitioners, plus natural and size-based schemes),
`natural` groups by a natural id (writer, user), `manifest` stores a drawn partition once
under `partitions/` for every later run, and `report` shows per-client label counts.
"""
