// Build module of the bundle's pause program: the sandbox process every pod's containers share.
// It uses the standard library only, so there is no go.sum to pin.
module hardened-cluster/artifacts/build/pause

go 1.25.0
