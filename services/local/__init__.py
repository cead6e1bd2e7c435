"""Running the platform on one machine: processes (redis-server, SeaweedFS, servers, workers) for `crossadapt up`, tests and benchmarks. Never used in a cluster."""
