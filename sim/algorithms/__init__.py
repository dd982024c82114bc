"""Algorithms beyond the stateless strategies: client state, server extras, personalisation.

    client_state   ClientStateStore: per-client arrays, bounded memory, spilled to the run dir
    rule           the client side: a ClientRule per client of a pack, the reply's records
    base           the server side: Algorithm, a FedAvg that ships state and extras
    client         the ClientApp's entry for rule-driven messages (image partitions)
    scaffold, feddyn, fednova, ditto, fedper   one module per algorithm (rule + strategy)

Choose one with `strategy=<name>`; write your own by subclassing `ClientRule` and
`Algorithm` and naming them with `_target_` (see the README's "Your own algorithm").
"""
