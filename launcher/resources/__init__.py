"""What jobs share on a node: GPU and core leases, ports, locks, process checks, work-dir claims."""
