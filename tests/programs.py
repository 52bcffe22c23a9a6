"""Programs started by the tests, several at once: each spends most of its time importing (one
core), so independent commands started together finish in about half the time on two cores."""
import subprocess


def run_together(commands, envs=None, timeout=300, **popen) -> list[subprocess.CompletedProcess]:
    """Every command in ``commands`` started at once, command i with environment ``envs[i]`` (None:
    this process's), ``popen`` (subprocess.Popen's keywords) shared; their results in the same order,
    as ``subprocess.run(..., capture_output=True, text=True)`` gives them."""
    envs = envs or [None] * len(commands)
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)
             for c, env in zip(commands, envs, strict=True)]
    done = []
    try:
        for c, p in zip(commands, procs):
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return done
