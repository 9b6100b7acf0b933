from kaito_images.cli import main

raise SystemExit(main())
