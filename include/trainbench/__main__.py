from trainbench.cli import main

raise SystemExit(main())
