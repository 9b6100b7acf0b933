/* The pod sandbox ("pause") process of the local real node: sleeps until SIGTERM/SIGINT and
 * reaps zombies (it is PID 1 of the pod's PID namespace when the namespace is shared).
 * Built once with `gcc -static` by kaito_localcluster.nodebuild; registry.k8s.io is not reachable here. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') { write(1, "pause kaito-1\n", 14); return 0; }
    struct sigaction stop = {.sa_handler = on_stop}, child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;) pause();
    return 42;
}
