/* See modules.h. Tables are fixed-size statics (no allocation); past
 * MAX_MODULES objects, further ones are written but not tracked for
 * unloading. */
#include "modules.h"
#include "loader-lock.h"
#include "recorder.h"

#include <elf.h>
#include <link.h>
#include <string.h>
#include <unistd.h>

#define MAX_MODULES 4096
#define MAX_RANGES 8192

struct module {
    uintptr_t bias;
    uint64_t name_hash;
    bool seen;
};

static struct module modules[MAX_MODULES];
static unsigned n_modules;
static struct range {
    uintptr_t lo, hi;
} ranges[MAX_RANGES];
static unsigned n_ranges;
static mti_lock_t modules_lock;
static unsigned long long last_adds, last_subs;
static bool scanned;

struct scan {
    bool force;
    unsigned n_new_ranges;
    struct range new_ranges[MAX_RANGES];
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static unsigned find_build_id(const struct dl_phdr_info *info, const uint8_t **ret)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            size_t name_sz = (nh->n_namesz + 3) & ~3u, desc_sz = (nh->n_descsz + 3) & ~3u;
            const uint8_t *name = p + sizeof(*nh), *desc = name + name_sz;
            if (desc + desc_sz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
                *ret = desc;
                return nh->n_descsz;
            }
            p = desc + desc_sz;
        }
    }
    return 0;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct scan *s = arg;
    last_adds = info->dlpi_adds;
    last_subs = info->dlpi_subs;
    const char *name = info->dlpi_name;
    char exe[512];
    if (!name || !*name) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        name = exe;
    }
    uintptr_t seg[16][2];
    unsigned nseg = 0;
    for (int i = 0; i < info->dlpi_phnum && nseg < 16; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        seg[nseg][0] = info->dlpi_addr + ph->p_vaddr;
        seg[nseg][1] = seg[nseg][0] + ph->p_memsz;
        if ((ph->p_flags & PF_X) && s->n_new_ranges < MAX_RANGES) {
            s->new_ranges[s->n_new_ranges].lo = seg[nseg][0];
            s->new_ranges[s->n_new_ranges].hi = seg[nseg][1];
            s->n_new_ranges++;
        }
        nseg++;
    }
    uint64_t h = hash_str(name);
    struct module *known = NULL;
    for (unsigned i = 0; i < n_modules && !known; i++)
        if (modules[i].bias == info->dlpi_addr && modules[i].name_hash == h)
            known = &modules[i];
    if (known) {
        known->seen = true;
        if (!s->force)
            return 0;
    }
    const uint8_t *bid = NULL;
    unsigned bid_len = find_build_id(info, &bid);
    mti_emit_module_load(info->dlpi_addr, nseg, (const uintptr_t(*)[2])seg, bid, bid_len, name);
    if (!known && n_modules < MAX_MODULES) {
        modules[n_modules].bias = info->dlpi_addr;
        modules[n_modules].name_hash = h;
        modules[n_modules].seen = true;
        n_modules++;
    }
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Insertion sort: no qsort (it may allocate), and the list is short. */
static void sort_ranges(struct range *r, unsigned n)
{
    for (unsigned i = 1; i < n; i++) {
        struct range v = r[i];
        unsigned j = i;
        while (j > 0 && cmp_range(&r[j - 1], &v) > 0) {
            r[j] = r[j - 1];
            j--;
        }
        r[j] = v;
    }
}

static void sync_locked(bool force)
{
    static struct scan s; /* large; guarded by modules_lock */
    s.force = force;
    s.n_new_ranges = 0;
    for (unsigned i = 0; i < n_modules; i++)
        modules[i].seen = false;
    dl_iterate_phdr(scan_one, &s);
    unsigned kept = 0;
    for (unsigned i = 0; i < n_modules; i++) {
        if (modules[i].seen)
            modules[kept++] = modules[i];
        else
            mti_emit_module_unload(modules[i].bias);
    }
    n_modules = kept;
    sort_ranges(s.new_ranges, s.n_new_ranges);
    memcpy(ranges, s.new_ranges, s.n_new_ranges * sizeof(ranges[0]));
    n_ranges = s.n_new_ranges;
    scanned = true;
}

void mti_modules_sync(bool force)
{
    if (!mti_loader_enter())
        return;
    if (mti_trylock(&modules_lock)) {
        sync_locked(force);
        mti_unlock(&modules_lock);
    }
    mti_loader_leave();
}

static int read_counters(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *c = arg;
    c[0] = info->dlpi_adds;
    c[1] = info->dlpi_subs;
    return 1;
}

void mti_modules_poll(void)
{
    if (!mti_loader_enter())
        return;
    if (mti_trylock(&modules_lock)) {
        unsigned long long c[2] = { 0, 0 };
        dl_iterate_phdr(read_counters, c);
        if (scanned && (c[0] != last_adds || c[1] != last_subs))
            sync_locked(false);
        mti_unlock(&modules_lock);
    }
    mti_loader_leave();
}

static bool covered(uintptr_t ip)
{
    unsigned lo = 0, hi = n_ranges;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (ip < ranges[mid].lo)
            hi = mid;
        else if (ip >= ranges[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

void mti_modules_check(const uintptr_t *ips, unsigned n)
{
    /* Called from the unwinding path, inside the fork gate already. */
    if (!mti_trylock(&modules_lock))
        return;
    for (unsigned i = 0; scanned && i < n; i++) {
        if (!covered(ips[i] - 1)) {
            /* Code outside every module (a JIT, say) stays outside: only
             * rescan when the loader's set actually changed. */
            unsigned long long c[2] = { 0, 0 };
            dl_iterate_phdr(read_counters, c);
            if (c[0] != last_adds || c[1] != last_subs)
                sync_locked(false);
            break;
        }
    }
    mti_unlock(&modules_lock);
}

void mti_modules_reset(void)
{
    atomic_store(&modules_lock, 0);
    n_modules = 0;
    n_ranges = 0;
    scanned = false;
}
