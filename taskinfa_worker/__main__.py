from taskinfa_worker.cli import main

raise SystemExit(main())
