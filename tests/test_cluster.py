"""train.cluster's share of a host: TensorFlow threads per worker (the rendezvous and links are tested in
test_distribute.py)."""

from allx.train.cluster import Cluster


def test_workers_on_one_host_split_its_cpus_and_a_lone_worker_keeps_the_default():
    loopback = Cluster(("127.0.0.1:1000", "127.0.0.1:1001"), 1)
    assert loopback.workers_here == 2
    assert loopback.threads_per_worker(cpus=2) == 1 and loopback.threads_per_worker(cpus=16) == 8
    assert Cluster(("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"), 0).threads_per_worker(cpus=2) == 1  # at least 1
    hosts = Cluster(("host1:12345", "host2:12345", "host2:12346"), 0)
    assert hosts.workers_here == 1 and hosts.threads_per_worker(cpus=2) is None
    assert Cluster(hosts.addresses, 2).workers_here == 2 and Cluster(hosts.addresses, 2).threads_per_worker(cpus=8) == 4
