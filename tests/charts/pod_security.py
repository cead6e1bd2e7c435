"""The Kubernetes Pod Security Standards, "restricted" profile, as a pure function of a pod spec.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version
v1.27+, the chart's oldest Kubernetes): every baseline control plus the restricted ones. The
admission controller of a namespace labelled `pod-security.kubernetes.io/enforce: restricted`
rejects a pod for any finding this returns; the chart must give it none.
"""

from __future__ import annotations

from typing import Any

# Baseline: capabilities a container may add beyond the runtime's default set.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# Restricted: the only capability that may be added (after dropping ALL).
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Restricted: the only volume types allowed.
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# Fields of a pod spec that are not volume sources.
_VOLUME_META = frozenset({"name"})


def _containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{field}[{c.get('name', i)}]", c)
            for field in ("initContainers", "containers", "ephemeralContainers")
            for i, c in enumerate(pod.get(field) or [])]


def restricted_violations(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Every way `pod` (a core/v1 PodSpec as a dict) breaks the restricted profile; empty when it complies.

    `annotations` are the pod's metadata annotations (the legacy AppArmor form lives there).
    """
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    containers = _containers(pod)

    # ---- baseline ---------------------------------------------------------------------------------
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field} must be unset or false")
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess"):
        found.append("securityContext.windowsOptions.hostProcess must not be true")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"volume {volume.get('name')}: hostPath volumes are forbidden")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    found += _selinux("securityContext", pod_ctx)
    found += _apparmor("securityContext", pod_ctx)
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value != "runtime/default" \
                and not value.startswith("localhost/"):
            found.append(f"annotation {key}={value}: AppArmor must be runtime/default or localhost/*")

    for where, container in containers:
        ctx = container.get("securityContext") or {}
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: windowsOptions.hostProcess must not be true")
        if ctx.get("privileged"):
            found.append(f"{where}: privileged must be unset or false")
        added = set((ctx.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            found.append(f"{where}: capabilities.add {sorted(added - BASELINE_CAPABILITIES)} beyond the baseline set")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{where}: hostPort {port['hostPort']} must be unset or 0")
        if ctx.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount must be Default")
        found += _selinux(where, ctx)
        found += _apparmor(where, ctx)

    # ---- restricted -------------------------------------------------------------------------------
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - _VOLUME_META
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume.get('name')}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)} is not allowed")

    pod_non_root = pod_ctx.get("runAsNonRoot") is True
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_ctx.get("runAsUser") == 0:
        found.append("securityContext.runAsUser must not be 0")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        found.append(f"securityContext.seccompProfile.type {pod_seccomp} must be RuntimeDefault or Localhost")
    for where, container in containers:
        ctx = container.get("securityContext") or {}
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation must be false")
        non_root = ctx.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            found.append(f"{where}: runAsNonRoot must be true (in the container or the pod)")
        if ctx.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser must not be 0")
        seccomp = (ctx.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in SECCOMP_TYPES:
            found.append(f"{where}: seccompProfile.type {seccomp} must be RuntimeDefault or Localhost")
        if seccomp is None and pod_seccomp is None:
            found.append(f"{where}: seccompProfile must be set (in the container or the pod)")
        capabilities = ctx.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{where}: capabilities.drop must include ALL")
        extra = set(capabilities.get("add") or []) - RESTRICTED_CAPABILITIES
        if extra:
            found.append(f"{where}: capabilities.add may only hold NET_BIND_SERVICE, not {sorted(extra)}")
    return found


def _selinux(where: str, ctx: dict[str, Any]) -> list[str]:
    options = ctx.get("seLinuxOptions") or {}
    found = []
    if options.get("type", "") not in SELINUX_TYPES:
        found.append(f"{where}: seLinuxOptions.type {options['type']} is not allowed")
    for field in ("user", "role"):
        if options.get(field):
            found.append(f"{where}: seLinuxOptions.{field} must be unset")
    return found


def _apparmor(where: str, ctx: dict[str, Any]) -> list[str]:
    profile = ctx.get("appArmorProfile")
    if profile and profile.get("type") not in APPARMOR_TYPES:
        return [f"{where}: appArmorProfile.type {profile.get('type')} must be RuntimeDefault or Localhost"]
    return []
