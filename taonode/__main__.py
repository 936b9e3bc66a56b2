from taonode.cli import main

raise SystemExit(main())
