#include <stdio.h>
int main(int argc, char **argv) { puts("strfry fixture"); return 0; }
