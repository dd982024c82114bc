"""The Flower way of running the same apps: `flwr run .` and a SuperLink with SuperNodes.

`app` is the Flower App that `[tool.flwr.app.components]` names (Simulation Runtime and
deployment alike); `launcher` is `python -m sim.deploy` (a SuperLink and N SuperNodes on
127.0.0.1); `roll_call` maps SuperNodes to client partitions; `supernode` is Flower's
SuperNode with short polls and `warm_exec` (with `warm_template`) its SuperExec, forking each
ClientApp from a process that imported the app once; `zygote` imports Flower, torch and the
app once for a whole local deployment and forks its SuperNodes, SuperExecs and ClientApps;
`certificates` makes the CA and
certificate of `--tls`; `processes` starts and stops Flower's processes offline and by
process id.
"""
