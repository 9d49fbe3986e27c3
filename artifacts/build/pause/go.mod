// Build module of the bundle's pause program: the sandbox process every pod's containers share.
module hardened-cluster/artifacts/build/pause

go 1.25.0
