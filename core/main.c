/* main.c - relay-server.  Everything is in librelay (core/server_cli.c). */
int relay__server_main(int argc, char **argv);

int main(int argc, char **argv) { return relay__server_main(argc, argv); }
