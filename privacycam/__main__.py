from privacycam.cli import main

raise SystemExit(main())
