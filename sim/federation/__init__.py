"""The federation: Flower's ClientApp and ServerApp, strategies, client sampling, Ray, training.

`client_app`/`server_app` are the two Flower apps; `strategy` and `privacy` build the
server's strategy (Flower's `flwr.serverapp.strategy`, DP wrappers); `sampling` picks and
packs the virtual clients of a round; `training` is the local SGD loop; `client_data` puts
each node's data in Ray's object store once; `ray_runtime` starts or attaches to Ray; and
`flower_internals` is the one adapter for every private Flower, Ray and flwr-datasets name.
"""
