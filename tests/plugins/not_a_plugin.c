/* not_a_plugin.c - a shared object without a descriptor. */
int not_a_plugin_answer(void);
int not_a_plugin_answer(void) { return 42; }
