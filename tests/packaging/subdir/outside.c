/* SPDX-License-Identifier: MIT */
/* The outside project's own program (tests/packaging/subdir_test.sh): it is
 * compiled with the outside project's flags, never libtcpchan's. */
#include <stdio.h>

#include <tcpchan/tcpchan.h>

int main(void)
{
    printf("%s\n", tc_version_string());
    return 0;
}
