/*
 * A stand-in for pyxis on the project's test clusters: a SPANK plugin that accepts pyxis's
 * srun options, so that a launch script written for a pyxis cluster (every srun of an L0
 * script carries --container-image, --container-env=... and friends) runs unchanged where there
 * are no containers. Built and loaded by tests/cluster/local.sh and docker/cluster.sh.
 *
 * What it does without containers:
 *   --container-workdir=PATH   the task's working directory (as pyxis does inside the
 *                              container); a directory that cannot be entered fails the task
 *   --container-env=NAME[,..]  nothing: the task already inherits srun's environment, which
 *                              is what pyxis copies into the container for these names
 *   everything else            accepted and ignored (image, mounts, name, save, home, root
 *                              remapping, entrypoint, writable/readonly)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(pyxis_stand_in, 1);

static char workdir[4096];

static int set_workdir(int val, const char *optarg, int remote)
{
	(void)val;
	(void)remote;
	if (optarg == NULL || optarg[0] == '\0' || strlen(optarg) >= sizeof(workdir)) {
		slurm_error("pyxis stand-in: --container-workdir needs a path");
		return -1;
	}
	strcpy(workdir, optarg);
	return 0;
}

static int accept_arg(int val, const char *optarg, int remote)
{
	(void)val;
	(void)remote;
	if (optarg == NULL) {
		slurm_error("pyxis stand-in: this option needs a value");
		return -1;
	}
	return 0;
}

static int accept_flag(int val, const char *optarg, int remote)
{
	(void)val;
	(void)optarg;
	(void)remote;
	return 0;
}

#define WITH_ARG(name, info, text, cb) { name, info, "[pyxis stand-in] " text, 1, 0, cb }
#define FLAG(name, text) { name, NULL, "[pyxis stand-in] " text, 0, 0, accept_flag }

static struct spank_option options[] = {
	WITH_ARG("container-image", "IMAGE", "accepted, ignored (no containers here)", accept_arg),
	WITH_ARG("container-mounts", "SRC:DST[,..]", "accepted, ignored", accept_arg),
	WITH_ARG("container-workdir", "PATH", "working directory of the tasks", set_workdir),
	WITH_ARG("container-name", "NAME", "accepted, ignored", accept_arg),
	WITH_ARG("container-save", "PATH", "accepted, ignored", accept_arg),
	WITH_ARG("container-env", "NAME[,..]", "accepted: the tasks inherit these anyway",
		 accept_arg),
	FLAG("container-mount-home", "accepted, ignored"),
	FLAG("no-container-mount-home", "accepted, ignored"),
	FLAG("container-remap-root", "accepted, ignored"),
	FLAG("no-container-remap-root", "accepted, ignored"),
	FLAG("container-entrypoint", "accepted, ignored"),
	FLAG("no-container-entrypoint", "accepted, ignored"),
	FLAG("container-entrypoint-log", "accepted, ignored"),
	FLAG("container-writable", "accepted, ignored"),
	FLAG("container-readonly", "accepted, ignored"),
	SPANK_OPTIONS_TABLE_END
};

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	for (struct spank_option *o = options; o->name != NULL; o++) {
		if (spank_option_register(sp, o) != ESPANK_SUCCESS) {
			slurm_error("pyxis stand-in: cannot register --%s", o->name);
			return -1;
		}
	}
	return 0;
}

/* In each task, after it became the user and before its program runs. */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	if (workdir[0] != '\0' && chdir(workdir) != 0) {
		slurm_error("pyxis stand-in: cannot enter --container-workdir %s: %s", workdir,
			    strerror(errno));
		return -1;
	}
	return 0;
}
