/* relayctl.c - the admin command.  Everything is in librelay (core/ctl_cli.c). */
int relay__ctl_main(int argc, char **argv);

int main(int argc, char **argv) { return relay__ctl_main(argc, argv); }
