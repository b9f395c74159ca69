from rwkvchat.cli import main

main()
