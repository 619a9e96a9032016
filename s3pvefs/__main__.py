from s3pvefs.cli import main

raise SystemExit(main())
