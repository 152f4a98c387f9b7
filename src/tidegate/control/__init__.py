"""The control plane (`tidegate control`): registry of instances leased by
heartbeat, versioned rule store, and the watch stream that pushes changes.

`plane.ControlPlane` holds the state and operations, `app.create_app` serves
them over HTTP, `storage.SqliteStorage` (or `etcd.EtcdStorage`, `--store etcd://...`)
persists rules, their history, service names and the global revision; `server.serve` runs it all under uvicorn.
"""
