/* out-file: whole-or-nothing output files (see out-file.h). The temporary
 * name is the destination's with ".tmp-PID-XXXXXX" appended (mkstemp), so
 * two commands writing the same destination do not share it. */
#include "out-file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mt_out_open(const char *path, struct mt_out **out, struct mt_error *err)
{
    struct mt_out *o = calloc(1, sizeof *o);
    if (!o) {
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    if (!strcmp(path, "-")) {
        o->f = stdout;
        *out = o;
        return 0;
    }
    size_t n = strlen(path) + 32;
    o->path = strdup(path);
    o->tmp = malloc(n);
    if (!o->path || !o->tmp) {
        mt_out_abort(o);
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    snprintf(o->tmp, n, "%s.tmp-%ld-XXXXXX", path, (long)getpid());
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        int e = errno;
        free(o->tmp);
        o->tmp = NULL;
        mt_out_abort(o);
        mti_error_set(err, "cannot write %s: %s", path, strerror(e));
        return -e;
    }
    /* mkstemp makes it 0600; a picture is as readable as any new file */
    mode_t um = umask(0);
    umask(um);
    (void)fchmod(fd, 0666 & ~um);
    if (!(o->f = fdopen(fd, "w"))) {
        int e = errno;
        close(fd);
        mt_out_abort(o);
        mti_error_set(err, "cannot write %s: %s", path, strerror(e));
        return -e;
    }
    *out = o;
    return 0;
}

void mt_out_abort(struct mt_out *o)
{
    if (!o)
        return;
    if (o->f && o->f != stdout)
        fclose(o->f);
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    free(o);
}

int mt_out_commit(struct mt_out *o, struct mt_error *err)
{
    if (o->f == stdout) {
        int bad = fflush(stdout) != 0 || ferror(stdout);
        free(o);
        if (bad) {
            mti_error_set(err, "cannot write to stdout");
            return -EIO;
        }
        return 0;
    }
    int bad = ferror(o->f);
    int e = bad ? EIO : 0;
    if (fclose(o->f) != 0 && !e)
        e = errno ? errno : EIO;
    o->f = NULL;
    if (!e && rename(o->tmp, o->path) != 0)
        e = errno;
    if (e) {
        mti_error_set(err, "cannot write %s: %s", o->path, strerror(e));
        mt_out_abort(o);
        return -e;
    }
    free(o->tmp);
    o->tmp = NULL;
    mt_out_abort(o);
    return 0;
}

void mt_xml_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            fputc(c < 0x20 && c != '\t' && c != '\n' ? '?' : c, f);
        }
    }
}

void mt_json_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}
