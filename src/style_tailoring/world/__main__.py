from style_tailoring.world.build import main

main()
